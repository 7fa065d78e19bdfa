package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/telemetry"
	"github.com/nudgehq/nudge/keys"
)

// The default -metrics-addr of each service: a port each, so that they run
// side by side on one machine (docs/settings.md).
const (
	IngestMetricsAddr  = "127.0.0.1:9090"
	WorkerMetricsAddr  = "127.0.0.1:9091"
	FlusherMetricsAddr = "127.0.0.1:9092"
	ReportMetricsAddr  = "127.0.0.1:9093"
)

// Keyspace is the -prefix and -shards settings: where Nudge's keys are.
// Producers and every service must agree on them.
type Keyspace struct {
	Prefix string
	Shards int
}

// Register adds -prefix and -shards to fs, with their defaults
// (keys.DefaultPrefix, keys.DefaultShards).
func (k *Keyspace) Register(fs *flag.FlagSet) {
	fs.StringVar(&k.Prefix, "prefix", keys.DefaultPrefix, "prefix of every Redis key (the same for producers and every service)")
	fs.IntVar(&k.Shards, "shards", keys.DefaultShards, "number of shard streams (the same for producers and every service)")
}

// Check returns a usage error for a bad setting.
func (k Keyspace) Check() error {
	if k.Shards <= 0 {
		return Usagef("-shards must be positive, not %d", k.Shards)
	}
	return nil
}

// Keys returns the keyspace the settings name.
func (k Keyspace) Keys() keys.Keyspace { return keys.New(k.Prefix, k.Shards) }

// Logging is the -log-level setting. Logs are JSON lines.
type Logging struct {
	Level string
}

// Register adds -log-level to fs.
func (l *Logging) Register(fs *flag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "debug, info, warn or error")
}

func (l Logging) level() (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return level, Usagef("-log-level %q: want debug, info, warn or error", l.Level)
	}
	return level, nil
}

// Check returns a usage error for a level that does not exist.
func (l Logging) Check() error {
	_, err := l.level()
	return err
}

// Logger returns a JSON logger writing to w at the level set (info when
// it does not parse: Check says so first).
func (l Logging) Logger(w io.Writer) *slog.Logger {
	level, _ := l.level()
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// Service is the settings every long-running service has: Redis,
// PostgreSQL, the keyspace, the metrics address and the log level.
type Service struct {
	Redis    datastore.Redis
	Postgres datastore.Postgres
	Keyspace
	Logging
	MetricsAddr string

	postgres ServiceFlags
	out      io.Writer // the logger's, from Parse
}

// ServiceFlags says how a service registers the shared settings.
type ServiceFlags struct {
	// MetricsAddr is -metrics-addr's default.
	MetricsAddr string
	// MetricsNote, if set, is added to -metrics-addr's usage.
	MetricsNote string
	// Postgres says what the service keeps in PostgreSQL, for
	// -database-url's usage.
	Postgres string
	// PostgresRequired makes an empty -database-url a usage error.
	PostgresRequired bool
}

// Register adds the shared settings to fs.
func (s *Service) Register(fs *flag.FlagSet, f ServiceFlags) {
	s.postgres = f
	s.Redis.Register(fs, datastore.DefaultRedisURL)
	s.Postgres.Register(fs, "", f.Postgres)
	s.Keyspace.Register(fs)
	usage := "listen address of /metrics, /healthz and /readyz (empty: none)"
	if f.MetricsNote != "" {
		usage = "listen address of /metrics, /healthz and /readyz (empty: none; " + f.MetricsNote + ")"
	}
	fs.StringVar(&s.MetricsAddr, "metrics-addr", f.MetricsAddr, usage)
	s.Logging.Register(fs)
}

// Parse reads a service's flags from args and the environment (Parse,
// no arguments after the flags) and checks the shared settings (Check).
// The settings are printed to out for -h, and flag.ErrHelp returned: the
// service returns it, and exits 0. The logger Open makes writes to out.
func (s *Service) Parse(fs *flagenv.FlagSet, args []string, getenv func(string) string, out io.Writer) error {
	fs.SetOutput(out)
	s.out = out
	if err := Parse(fs, args, getenv, false); err != nil {
		return err
	}
	return s.Check()
}

// Check returns every bad shared setting, as one usage error.
func (s *Service) Check() error {
	var errs []error
	if _, err := s.Redis.Options(); err != nil {
		errs = append(errs, err)
	}
	if s.Postgres.URL != "" || s.postgres.PostgresRequired {
		if _, err := s.Postgres.Config(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.Keyspace.Check(), s.Logging.Check())
	return Usage(errors.Join(errs...))
}

// Deps are what a service runs on, made from its settings by Open.
type Deps struct {
	// Log is the service's logger, at -log-level, writing JSON to the
	// output Parse was given; Keys its keyspace (-prefix, -shards).
	Log  *slog.Logger
	Keys keys.Keyspace
	// Registry is the service's metrics registry (telemetry.NewRegistry),
	// and Errors its error counters of Redis and PostgreSQL.
	Registry *prometheus.Registry
	Errors   telemetry.Errors
	// Redis is the client, with the error counting hook; RedisOptions
	// what it was made from (Describe names it for logs).
	Redis        redis.UniversalClient
	RedisOptions datastore.Options
	// DB is the PostgreSQL pool, traced; nil without -database-url.
	DB *pgxpool.Pool

	metricsAddr string
}

// Open makes the service's logger, metrics registry, Redis client and
// PostgreSQL pool (with -database-url), for the service named component
// in metrics.
// It does not wait for either to answer.
func (s *Service) Open(ctx context.Context, component string) (*Deps, error) {
	ropt, err := s.Redis.Options()
	if err != nil {
		return nil, Usage(err)
	}
	out := s.out
	if out == nil {
		out = io.Discard
	}
	d := &Deps{Log: s.Logger(out), Keys: s.Keys(), Registry: telemetry.NewRegistry(), RedisOptions: ropt, metricsAddr: s.MetricsAddr}
	d.Errors = telemetry.NewErrors(d.Registry, component)
	d.Redis = ropt.Client()
	d.Redis.AddHook(telemetry.RedisHook(d.Errors.Redis))
	if s.Postgres.URL != "" {
		if d.DB, err = s.Postgres.Pool(ctx, telemetry.PGTracer(d.Errors.Postgres)); err != nil {
			_ = d.Redis.Close()
			return nil, fmt.Errorf("postgres: %w", err)
		}
	}
	return d, nil
}

// Scripts names the service's Redis scripts (datastore.NewScript's
// component) and a key of the slot they run on, for Serve to check.
type Scripts struct {
	Key   string
	Names []string
}

// Serve runs main beside the service's /metrics, /healthz and /readyz on
// -metrics-addr (none when empty). Ready means Redis answers, PostgreSQL
// too with -database-url, and every check given passes. Before main, Serve
// waits for Redis and refuses to start if the service's Redis user may not
// run a command of its scripts (datastore.RequireScripts): a script that
// fails halfway through a batch is worse than a service that does not
// start.
func (d *Deps) Serve(ctx context.Context, scripts Scripts, main func(ctx context.Context) error, checks ...telemetry.Check) error {
	all := []telemetry.Check{telemetry.RedisCheck(d.Redis)}
	if d.DB != nil {
		all = append(all, telemetry.PostgresCheck(d.DB))
	}
	all = append(all, checks...)
	cfg := telemetry.ServerConfig{Addr: d.metricsAddr, Registry: d.Registry, Checks: all, Logger: d.Log}
	return telemetry.RunBeside(ctx, cfg, func(ctx context.Context) error {
		if err := datastore.RequireScripts(ctx, d.Redis, d.Log, scripts.Key, scripts.Names...); err != nil {
			return err
		}
		return main(ctx)
	})
}

// Close closes the Redis client and the PostgreSQL pool.
func (d *Deps) Close() {
	if d.DB != nil {
		d.DB.Close()
	}
	_ = d.Redis.Close()
}
