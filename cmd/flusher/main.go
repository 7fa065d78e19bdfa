// Command flusher moves Nudge's analytics counters and daily active users
// from Redis to PostgreSQL (package flush), every interval, until SIGTERM.
//
//	flusher [-migrate] [-once] [flags]
//
// Every flag has an environment variable (-redis-url: NUDGE_REDIS_URL);
// the flag wins. The first SIGINT or
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
	"syscall"
	"time"

	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/telemetry"
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

// DefaultMetricsAddr is the default of -metrics-addr.
const DefaultMetricsAddr = "127.0.0.1:9092"

type options struct {
	redis       datastore.Redis
	postgres    datastore.Postgres
	prefix      string
	shards      int
	interval    time.Duration
	grace       time.Duration
	leaseTTL    time.Duration
	logLevel    string
	level       slog.Level
	metricsAddr string
	migrate     bool
	once        bool
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("flusher", flag.ContinueOnError)
	o.redis.Register(fs, datastore.DefaultRedisURL)
	o.postgres.Register(fs, "", "PostgreSQL of the counters (required)")
	fs.StringVar(&o.prefix, "prefix", keys.DefaultPrefix, "prefix of every Redis key")
	fs.IntVar(&o.shards, "shards", keys.DefaultShards, "number of shards")
	fs.DurationVar(&o.interval, "interval", flush.DefaultInterval, "time between rounds")
	fs.DurationVar(&o.grace, "grace", flush.DefaultGrace, "how long after its end a minute is left to writers")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 0, "lease TTL between replicas; 0: three intervals")
	fs.StringVar(&o.metricsAddr, "metrics-addr", DefaultMetricsAddr, "listen address of /metrics, /healthz and /readyz (empty: none; never with -once)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.migrate, "migrate", false, "apply pending schema migrations before starting")
	fs.BoolVar(&o.once, "once", false, "run one round and exit")
	fs.Usage = flagenv.Usage(fs, "flusher: move counters from Redis to PostgreSQL")
	return fs
}

func parse(args []string, getenv func(string) string, stdout io.Writer) (options, error) {
	var o options
	fs := flags(&o)
	fs.SetOutput(stdout)
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %w", errUsage, err)
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if _, err := o.redis.Options(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.postgres.Config(); err != nil {
		errs = append(errs, err)
	}
	if o.shards <= 0 {
		errs = append(errs, fmt.Errorf("-shards must be positive, not %d", o.shards))
	}
	if err := o.level.UnmarshalText([]byte(o.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level %q: %w", o.logLevel, err))
	}
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
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: o.level}))

	ropt, _ := o.redis.Options() // checked by parse
	reg := telemetry.NewRegistry()
	errs := telemetry.NewErrors(reg, "flusher")
	rdb := ropt.Client()
	defer rdb.Close()
	rdb.AddHook(telemetry.RedisHook(errs.Redis))
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", ropt.Describe(), err)
	}

	db, err := o.postgres.Pool(ctx, telemetry.PGTracer(errs.Postgres))
	if err != nil {
		return err
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
		Metrics:  reg,
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
	checks := []telemetry.Check{telemetry.RedisCheck(rdb), telemetry.PostgresCheck(db)}
	return telemetry.RunBeside(ctx, telemetry.ServerConfig{Addr: o.metricsAddr, Registry: reg, Checks: checks, Logger: log}, func(ctx context.Context) error {
		if err := datastore.RequireScripts(ctx, rdb, log, flush.LeaseKey(keys.New(o.prefix, o.shards)), "flusher"); err != nil {
			return err
		}
		log.Info("flusher started", "redis", ropt.Describe(), "prefix", o.prefix, "shards", o.shards, "interval", o.interval.String(),
			"lease_key", flush.LeaseKey(keys.New(o.prefix, o.shards)))
		err := f.Run(ctx)
		log.Info("flusher stopped")
		return err
	})
}
