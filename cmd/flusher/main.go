// Command flusher moves Nudge's analytics counters and daily active users
// from Redis to PostgreSQL (package flush), every interval, until SIGTERM.
//
//	flusher [-migrate] [-once] [flags]
//
// Every flag has an environment variable; the flag wins. The first SIGINT or
// SIGTERM finishes the round in progress and exits; a second one kills the
// process at once. Logs are JSON lines on standard output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/schema"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, the default action is back: a second one
	// stops the process hard.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "flusher:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

type options struct {
	redisAddrs    []string
	redisCluster  bool
	redisPassword string
	databaseURL   string
	prefix        string
	shards        int
	interval      time.Duration
	grace         time.Duration
	leaseTTL      time.Duration
	logLevel      slog.Level
	migrate       bool
	once          bool
}

func parse(args []string, getenv func(string) string, stdout io.Writer) (options, error) {
	var (
		o    options
		errs []error
	)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	envInt := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not an integer", name, v))
		}
		return n
	}
	envDuration := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a duration (10s, 1m)", name, v))
		}
		return d
	}
	envBool := func(name string) bool {
		v := getenv(name)
		if v == "" {
			return false
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a boolean", name, v))
		}
		return b
	}

	fs := flag.NewFlagSet("flusher", flag.ContinueOnError)
	fs.SetOutput(stdout)
	addrs := fs.String("redis-addr", env("NUDGE_REDIS_ADDR", "127.0.0.1:6379"), "Redis address; several, comma-separated, for a Redis Cluster (env NUDGE_REDIS_ADDR)")
	fs.BoolVar(&o.redisCluster, "redis-cluster", envBool("NUDGE_REDIS_CLUSTER"), "Redis is a cluster even with one address (env NUDGE_REDIS_CLUSTER)")
	fs.StringVar(&o.databaseURL, "database-url", getenv("NUDGE_DATABASE_URL"), "PostgreSQL connection string (env NUDGE_DATABASE_URL)")
	fs.StringVar(&o.prefix, "prefix", env("NUDGE_PREFIX", keys.DefaultPrefix), "prefix of every Redis key (env NUDGE_PREFIX)")
	fs.IntVar(&o.shards, "shards", envInt("NUDGE_SHARDS", keys.DefaultShards), "number of shards (env NUDGE_SHARDS)")
	fs.DurationVar(&o.interval, "interval", envDuration("NUDGE_FLUSH_INTERVAL", flush.DefaultInterval), "time between rounds (env NUDGE_FLUSH_INTERVAL)")
	fs.DurationVar(&o.grace, "grace", envDuration("NUDGE_FLUSH_GRACE", flush.DefaultGrace), "how long after its end a minute is left to writers (env NUDGE_FLUSH_GRACE)")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", envDuration("NUDGE_FLUSH_LEASE_TTL", 0), "lease TTL between replicas; 0: three intervals (env NUDGE_FLUSH_LEASE_TTL)")
	level := fs.String("log-level", env("NUDGE_LOG_LEVEL", "info"), "debug, info, warn or error (env NUDGE_LOG_LEVEL)")
	fs.BoolVar(&o.migrate, "migrate", envBool("NUDGE_MIGRATE"), "apply pending schema migrations before starting (env NUDGE_MIGRATE)")
	fs.BoolVar(&o.once, "once", false, "run one round and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	for _, a := range strings.Split(*addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.redisAddrs = append(o.redisAddrs, a)
		}
	}
	if len(o.redisAddrs) == 0 {
		errs = append(errs, errors.New("no Redis address"))
	}
	if o.databaseURL == "" {
		errs = append(errs, errors.New("no database: set -database-url or NUDGE_DATABASE_URL"))
	}
	if o.shards <= 0 {
		errs = append(errs, fmt.Errorf("shards must be positive, not %d", o.shards))
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		errs = append(errs, fmt.Errorf("log level %q: %w", *level, err))
	}
	o.redisPassword = getenv("NUDGE_REDIS_PASSWORD") // not a flag: flags show in ps
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	return o, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	o, err := parse(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: o.logLevel}))

	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:         o.redisAddrs,
		IsClusterMode: o.redisCluster,
		Password:      o.redisPassword,
	})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", strings.Join(o.redisAddrs, ","), err)
	}

	db, err := pgxpool.New(ctx, o.databaseURL)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer db.Close()
	if err := db.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}

	if o.migrate {
		done, err := schema.Up(ctx, db)
		for _, m := range done {
			log.Info("migration applied", "version", m.Version, "name", m.Name)
		}
		if err != nil {
			return err
		}
	}

	f, err := flush.New(rdb, db, flush.Config{
		Interval: o.interval,
		Grace:    o.grace,
		Keyspace: keys.New(o.prefix, o.shards),
		LeaseTTL: o.leaseTTL,
		Logger:   log,
	})
	if err != nil {
		return err
	}

	if o.once {
		st, err := f.FlushOnce(ctx)
		log.Info("flush round", "snapshots", st.Snapshots, "leftovers", st.Leftovers, "flushes", st.Flushes,
			"replayed", st.Replayed, "rows", st.Rows, "bad_fields", st.BadFields,
			"active_users", st.ActiveUsers, "days_closed", st.DaysClosed)
		return err
	}
	log.Info("flusher started", "prefix", o.prefix, "shards", o.shards, "interval", o.interval.String(), "lease_key", flush.LeaseKey(keys.New(o.prefix, o.shards)))
	err = f.Run(ctx)
	log.Info("flusher stopped")
	return err
}
