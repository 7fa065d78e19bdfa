// Command flusher moves Nudge's analytics counters and daily active users
// from Redis to PostgreSQL (package flush), every interval, until SIGTERM.
//
//	flusher [-migrate] [-once] [flags]
//
// Every flag has an environment variable (-redis-url: NUDGE_REDIS_URL);
// the flag wins. The first SIGINT or SIGTERM finishes the round in
// progress and exits; a second one kills the process at once (cli.Main).
// Logs are JSON lines on standard output.
package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/schema"
)

func main() {
	cli.Run("flusher", run)
}

type options struct {
	cli.Service
	interval time.Duration
	grace    time.Duration
	leaseTTL time.Duration
	migrate  bool
	once     bool
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("flusher", "flusher: move counters from Redis to PostgreSQL", flagenv.EnvName)
	o.Service.Register(fs.FlagSet, cli.ServiceFlags{MetricsAddr: cli.FlusherMetricsAddr, MetricsNote: "never with -once",
		Postgres: "PostgreSQL of the counters (required)", PostgresRequired: true})
	fs.DurationVar(&o.interval, "interval", flush.DefaultInterval, "time between rounds")
	fs.DurationVar(&o.grace, "grace", flush.DefaultGrace, "how long after its end a minute is left to writers")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 0, "lease TTL between replicas; 0: three intervals")
	fs.BoolVar(&o.migrate, "migrate", false, "apply pending schema migrations before starting")
	fs.BoolVar(&o.once, "once", false, "run one round and exit")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	if err := o.Parse(flags(&o), args, getenv, stdout); err != nil {
		return err
	}

	d, err := o.Open(ctx, "flusher")
	if err != nil {
		return err
	}
	defer d.Close()
	rdb, db, log, ks := d.Redis, d.DB, d.Log, d.Keys
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", d.RedisOptions.Describe(), err)
	}
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
		Keyspace: ks,
		LeaseTTL: o.leaseTTL,
		Metrics:  d.Registry,
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
	return d.Serve(ctx, cli.Scripts{Key: ks.FlusherLease(), Names: []string{"flusher"}}, func(ctx context.Context) error {
		log.Info("flusher started", "redis", d.RedisOptions.Describe(), "prefix", ks.Prefix, "shards", ks.Shards, "interval", o.interval.String(),
			"lease_key", ks.FlusherLease())
		err := f.Run(ctx)
		log.Info("flusher stopped")
		return err
	})
}
