// Command report serves and prints Nudge's admin reports (package report).
//
//	report serve [-addr 127.0.0.1:8090] [-token T | -basic-auth user:pass] [flags]
//	report [print] -metric messages_sent [-from -7d] [-to now] [-step day]
//	       [-app x] [-platform y] [-reason r] [-group app] [-tz Europe/Berlin]
//	       [-format table|csv] [-live] [flags]
//
// serve runs the JSON/CSV API, the dashboard and asynq's web UI (at
// /queues) until SIGINT or SIGTERM: the first signal lets requests in
// flight finish, a second one stops at once. It refuses to listen on a
// non-loopback address without a token or basic auth. Logs are JSON lines
// on standard output.
//
// print (the default) prints one series as an aligned table or CSV.
//
// Every serve flag, and the connection flags of print (-database-url,
// -redis-url, -redis-cluster, -prefix, -shards), can be set from the
// environment: -basic-auth from NUDGE_BASIC_AUTH and so on (package
// flagenv); the command line wins. Prefer the environment for secrets
// (NUDGE_TOKEN, NUDGE_BASIC_AUTH, passwords in URLs): flags show in ps.
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
	"text/tabwriter"
	"time"
	_ "time/tzdata" // time zones of queries even on hosts without zoneinfo

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the default action is back: a second one
	// stops the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `usage:
  report serve [flags]            serve the API, the dashboard and the queues UI
  report [print] -metric M [flags] print a series as a table or CSV

Run "report serve -h" or "report print -h" for the flags.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			return serve(ctx, args[1:], getenv, stdout)
		case "print":
			return printSeries(ctx, args[1:], getenv, stdout)
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return nil
		}
		if !strings.HasPrefix(args[0], "-") {
			fmt.Fprint(stdout, usage)
			return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
		}
	}
	return printSeries(ctx, args, getenv, stdout)
}

// connFlags are the flags that say where the data is.
type connFlags struct {
	databaseURL  string
	redisURL     string
	redisCluster bool
	prefix       string
	shards       int
}

// connFlagNames are the flags print reads from the environment.
var connFlagNames = []string{"database-url", "redis-url", "redis-cluster", "prefix", "shards"}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.databaseURL, "database-url", "", "PostgreSQL URL (required; a read-only role is enough: see report/README.md)")
	fs.StringVar(&c.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis URL (redis:// or rediss://) of live counters and asynq; empty: no live mode, no queues UI")
	fs.BoolVar(&c.redisCluster, "redis-cluster", false, "Redis is a cluster: -redis-url lists its nodes (redis://h1:6379?addr=h2:6379)")
	fs.StringVar(&c.prefix, "prefix", keys.DefaultPrefix, "prefix of Nudge's Redis keys")
	fs.IntVar(&c.shards, "shards", keys.DefaultShards, "number of shards (as ingest's)")
}

func (c *connFlags) check() error {
	if c.databaseURL == "" {
		return fmt.Errorf("%w: no database: set -database-url or NUDGE_DATABASE_URL", errUsage)
	}
	if c.shards <= 0 {
		return fmt.Errorf("%w: -shards must be positive, not %d", errUsage, c.shards)
	}
	return nil
}

// redisClients returns Nudge's Redis client and asynq's connection to the
// same Redis; nil, nil if -redis-url is empty.
func (c *connFlags) redisClients() (redis.UniversalClient, asynq.RedisConnOpt, error) {
	if c.redisURL == "" {
		return nil, nil, nil
	}
	if c.redisCluster {
		o, err := redis.ParseClusterURL(c.redisURL)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: -redis-url: %w", errUsage, err)
		}
		return redis.NewClusterClient(o), asynq.RedisClusterClientOpt{
			Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		}, nil
	}
	o, err := redis.ParseURL(c.redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: -redis-url: %w", errUsage, err)
	}
	return redis.NewClient(o), asynq.RedisClientOpt{
		Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig,
	}, nil
}

func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	return nil
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report serve", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		conn           connFlags
		addr           = fs.String("addr", report.DefaultAddr, "listen address; a non-loopback one needs -token or -basic-auth")
		token          = fs.String("token", "", "bearer token of the admin routes, at least 16 bytes (prefer NUDGE_TOKEN: flags show in ps)")
		basicAuth      = fs.String("basic-auth", "", "user:password of HTTP basic auth, password at least 12 bytes (prefer NUDGE_BASIC_AUTH)")
		queues         = fs.Bool("queues", true, "mount asynq's web UI (asynqmon) at /queues")
		queuesReadOnly = fs.Bool("queues-read-only", false, "the queues UI shows tasks but cannot change them")
		maxPoints      = fs.Int("max-points", report.DefaultMaxPoints, "most points of one answer")
		queryTimeout   = fs.Duration("query-timeout", report.DefaultQueryTimeout, "time limit of one report")
		logLevel       = fs.String("log-level", "info", "debug, info, warn or error")
	)
	conn.register(fs)
	fs.Usage = flagenv.Usage(fs, "report serve: the reports API, dashboard and queues UI")
	if err := parseFlags(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := conn.check(); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: -log-level: %w", errUsage, err)
	}
	var user, pass string
	if *basicAuth != "" {
		var ok bool
		if user, pass, ok = strings.Cut(*basicAuth, ":"); !ok {
			return fmt.Errorf("%w: -basic-auth must be user:password", errUsage)
		}
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))

	rdb, queuesOpt, err := conn.redisClients()
	if err != nil {
		return err
	}
	if rdb != nil {
		defer rdb.Close()
	}
	if !*queues {
		queuesOpt = nil
	}
	db, err := pgxpool.New(ctx, conn.databaseURL)
	if err != nil {
		return fmt.Errorf("%w: -database-url: %w", errUsage, err)
	}
	defer db.Close()
	store, err := report.NewStore(db, report.StoreConfig{Redis: rdb, Keyspace: keys.New(conn.prefix, conn.shards), MaxPoints: *maxPoints})
	if err != nil {
		return err
	}
	// The server checks its address and auth before anything connects.
	srv, err := report.NewServer(store, report.ServerConfig{
		Addr: *addr, Token: *token, BasicUser: user, BasicPassword: pass,
		Queues: queuesOpt, QueuesReadOnly: *queuesReadOnly, QueryTimeout: *queryTimeout, Logger: log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	if err := db.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if rdb != nil {
		if err := rdb.Ping(ctx).Err(); err != nil {
			// Postgres reports work without it: say so, and serve.
			log.Warn("redis does not answer: live mode and the queues UI will fail until it does", "error", err)
		}
	}
	return srv.Run(ctx)
}

func printSeries(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report print", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		conn     connFlags
		metric   = fs.String("metric", "", "metric to print (required), e.g. messages_sent")
		from     = fs.String("from", "-24h", "start: now, -24h, -7d, 2026-03-01, or RFC 3339")
		to       = fs.String("to", "now", "end, excluded; same forms as -from")
		step     = fs.String("step", "hour", "minute, hour or day")
		app      = fs.String("app", "", "only this app")
		platform = fs.String("platform", "", "only this platform (fcm, apns)")
		reason   = fs.String("reason", "", "only this reason")
		group    = fs.String("group", "", "a row per app, platform or reason")
		tz       = fs.String("tz", "UTC", "IANA time zone of the buckets, e.g. Europe/Berlin")
		format   = fs.String("format", "table", "table or csv")
		live     = fs.Bool("live", false, "add the counters not yet flushed, from Redis")
	)
	conn.register(fs)
	fs.Usage = flagenv.Usage(fs, "report print: print a series of a metric")
	// Only connection flags come from the environment: a NUDGE_APP set
	// for another program must not filter a report.
	connEnv := func(name string) string {
		for _, f := range connFlagNames {
			if flagenv.EnvName(f) == name {
				return getenv(name)
			}
		}
		return ""
	}
	if err := parseFlags(fs, args, connEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := conn.check(); err != nil {
		return err
	}
	if *format != "table" && *format != "csv" {
		return fmt.Errorf("%w: -format must be table or csv, not %q", errUsage, *format)
	}
	q, err := seriesQuery(*metric, *from, *to, *step, *group, *tz, report.Filter{App: *app, Platform: *platform, Reason: *reason}, time.Now())
	if err != nil {
		return err
	}
	q.Live = *live

	var rdb redis.UniversalClient
	if q.Live {
		if conn.redisURL == "" {
			return fmt.Errorf("%w: -live needs -redis-url", errUsage)
		}
		if rdb, _, err = conn.redisClients(); err != nil {
			return err
		}
		defer rdb.Close()
	}
	db, err := pgxpool.New(ctx, conn.databaseURL)
	if err != nil {
		return fmt.Errorf("%w: -database-url: %w", errUsage, err)
	}
	defer db.Close()
	store, err := report.NewStore(db, report.StoreConfig{Redis: rdb, Keyspace: keys.New(conn.prefix, conn.shards)})
	if err != nil {
		return err
	}
	s, err := store.Series(ctx, q)
	if err != nil {
		var pe *report.ParamError
		if errors.As(err, &pe) {
			return fmt.Errorf("%w: -%w", errUsage, err)
		}
		return err
	}
	if *format == "csv" {
		return s.WriteCSV(stdout)
	}
	return writeTable(stdout, s)
}

// seriesQuery builds the query of the print flags.
func seriesQuery(metric, from, to, step, group, tz string, f report.Filter, now time.Time) (report.SeriesQuery, error) {
	q := report.SeriesQuery{Metric: metric, Filter: f}
	var err error
	usage := func(err error) error { return fmt.Errorf("%w: -%w", errUsage, err) }
	if q.Location, err = report.LoadLocation(tz); err != nil {
		return q, usage(err)
	}
	if q.Step, err = report.ParseStep(step); err != nil {
		return q, usage(err)
	}
	if q.Group, err = report.ParseDimension(group); err != nil {
		return q, usage(err)
	}
	if q.From, err = report.ParseTime(from, now, q.Location); err != nil {
		return q, fmt.Errorf("%w: -from %q: %w", errUsage, from, err)
	}
	if q.To, err = report.ParseTime(to, now, q.Location); err != nil {
		return q, fmt.Errorf("%w: -to %q: %w", errUsage, to, err)
	}
	return q, nil
}

// timeLayout formats a bucket start: with its zone's abbreviation, which
// tells apart the two 02:00 of a night when clocks go back.
func timeLayout(step report.Step) string {
	if step == report.StepDay {
		return "2006-01-02"
	}
	return "2006-01-02 15:04 MST"
}

func writeTable(w io.Writer, s *report.Series) error {
	grouped := s.Group != report.DimNone
	width := max(len(strconv.FormatInt(s.Total, 10)), len("VALUE"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"TIME (" + s.TZ + ")"}
	if grouped {
		header = append(header, strings.ToUpper(string(s.Group)))
	}
	header = append(header, fmt.Sprintf("%*s", width, "VALUE"))
	if s.Live {
		header = append(header, "LIVE")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	if len(s.Groups) > 0 {
		for i := range s.Groups[0].Points {
			for _, g := range s.Groups {
				p := g.Points[i]
				row := []string{p.Time.Format(timeLayout(s.Step))}
				if grouped {
					row = append(row, g.Key)
				}
				row = append(row, fmt.Sprintf("%*d", width, p.Value))
				if p.Live {
					row = append(row, "live")
				}
				fmt.Fprintln(tw, strings.Join(row, "\t"))
			}
		}
	}
	total := []string{"TOTAL"}
	if grouped {
		total = append(total, "")
	}
	total = append(total, fmt.Sprintf("%*d", width, s.Total))
	fmt.Fprintln(tw, strings.Join(total, "\t"))
	return tw.Flush()
}
