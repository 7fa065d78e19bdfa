// Command report serves and prints Nudge's admin reports (package report).
//
//	report serve [-addr 127.0.0.1:8090] [-token T | -basic-auth user:pass]
//	       [-admin-token T | -admin-basic-auth user:pass] [flags]
//	report [print] -metric messages_sent [-from -7d] [-to now] [-step day]
//	       [-app x] [-platform y] [-reason r] [-group app] [-tz Europe/Berlin]
//	       [-format table|csv] [-live] [flags]
//
// serve runs the JSON/CSV API, the dashboard and asynq's web UI (at
// /queues) until SIGINT or SIGTERM: the first signal lets requests in
// flight finish, a second one stops at once. It refuses to listen on a
// non-loopback address without a token or basic auth. Readers (-token,
// -basic-auth) read the reports and see the queues read-only; admins
// (-admin-token, -admin-basic-auth) may also change tasks there. Logs are
// JSON lines on standard output.
//
// print (the default) prints one series as an aligned table or CSV.
//
// Every serve flag, and the connection flags of print (-database-url,
// -redis-url, -redis-cluster, -redis-ca-file, -prefix, -shards), can be set from the
// environment: -basic-auth from NUDGE_BASIC_AUTH and so on (package
// flagenv); the command line wins. Prefer the environment for secrets
// (NUDGE_TOKEN, NUDGE_BASIC_AUTH, NUDGE_ADMIN_TOKEN,
// NUDGE_ADMIN_BASIC_AUTH, passwords in URLs): flags show in ps.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	_ "time/tzdata" // time zones of queries even on hosts without zoneinfo

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/telemetry"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

func main() {
	cli.Main("report", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout) })
}

// DefaultMetricsAddr is the default of serve's -metrics-addr.
const DefaultMetricsAddr = "127.0.0.1:9093"

const usage = `usage:
  report serve [flags]                 serve the API, the dashboard and the queues UI
  report [print] -metric M [flags]     print a series as a table or CSV
  report effectiveness [flags]         per stage: reminders pushed, opened and converted
  report metrics                       list the metrics
  report sessions sign-in-link [flags] print a link that signs a browser in, once
  report sessions revoke-all [flags]   sign out every browser session of every server

Run "report serve -h", "report print -h", "report effectiveness -h" or "report sessions sign-in-link -h" for the flags.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			return serve(ctx, args[1:], getenv, stdout)
		case "print":
			return printSeries(ctx, args[1:], getenv, stdout)
		case "sessions":
			return sessions(ctx, args[1:], getenv, stdout)
		case "metrics":
			return metrics(args[1:], stdout)
		case "effectiveness":
			return effectiveness(ctx, args[1:], getenv, stdout)
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return nil
		}
		if !strings.HasPrefix(args[0], "-") {
			fmt.Fprint(stdout, usage)
			return fmt.Errorf("%w: unknown command %q", cli.ErrUsage, args[0])
		}
	}
	return printSeries(ctx, args, getenv, stdout)
}

// connFlags are the flags that say where the data is.
type connFlags struct {
	postgres datastore.Postgres
	redis    datastore.Redis
	prefix   string
	shards   int
}

// connEnv names the variables of the connection flags, the only ones print,
// effectiveness and sessions read from the environment: a NUDGE_APP set
// for another program must not filter a report.
var connEnv = flagenv.Only("database-url", "redis-url", "redis-cluster", "redis-ca-file", "prefix", "shards")

func (c *connFlags) register(fs *flag.FlagSet) {
	c.postgres.Register(fs, "", "PostgreSQL of the counters (required; a read-only role is enough: see report/README.md)")
	c.redis.Register(fs, datastore.DefaultRedisURL)
	if f := fs.Lookup("redis-url"); f != nil {
		f.Usage += "; of live counters and asynq (empty: no live mode, no queues UI)"
	}
	fs.StringVar(&c.prefix, "prefix", keys.DefaultPrefix, "prefix of Nudge's Redis keys")
	fs.IntVar(&c.shards, "shards", keys.DefaultShards, "number of shards (as ingest's)")
}

func (c *connFlags) check() error {
	if _, err := c.postgres.Config(); err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	if c.redis.Enabled() {
		if _, err := c.redis.Options(); err != nil {
			return fmt.Errorf("%w: %w", cli.ErrUsage, err)
		}
	}
	if c.shards <= 0 {
		return fmt.Errorf("%w: -shards must be positive, not %d", cli.ErrUsage, c.shards)
	}
	return nil
}

// redisClients returns Nudge's Redis client and asynq's connection to the
// same Redis; nil, nil if Redis is not configured (empty -redis-url).
func (c *connFlags) redisClients() (redis.UniversalClient, asynq.RedisConnOpt, error) {
	if !c.redis.Enabled() {
		return nil, nil, nil
	}
	o, err := c.redis.Options()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	return o.Client(), o.Asynq(), nil
}

// prefixHasKeys reports whether Redis holds any shard stream or counter
// index of ks: none means nothing of Nudge's is there under that prefix
// (a wrong -prefix, or -shards), and live counters will be empty.
func prefixHasKeys(ctx context.Context, rdb redis.UniversalClient, ks keys.Keyspace) (bool, error) {
	for s := 0; s < ks.Shards; s++ {
		n, err := rdb.Exists(ctx, ks.Stream(s), ks.CounterIndex(s)).Result()
		if err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// noKeysNote is what a live query of a prefix without keys says.
func noKeysNote(prefix string) string {
	return fmt.Sprintf("Redis holds no key of Nudge's under the prefix %q: no live counters (is -prefix, NUDGE_PREFIX, the one ingest uses?)", prefix)
}

// parseFlags reads a subcommand's flags, and the variables envName names.
func parseFlags(fs *flag.FlagSet, args []string, getenv, envName func(string) string) error {
	return cli.ParseEnv(fs, args, getenv, envName, false)
}

type serveOptions struct {
	addr, token, basicAuth string
	adminToken, adminBasic string
	authFailureLimit       int
	trustedProxies         string
	queues, queuesReadOnly bool
	maxPoints              int
	queryTimeout           time.Duration
	metricsAddr, logLevel  string
}

// serveFlags returns the flag set of serve, writing into conn and o.
func serveFlags(conn *connFlags, o *serveOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("report serve", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", report.DefaultAddr, "listen address; a non-loopback one needs a credential (-token, -basic-auth, -admin-token or -admin-basic-auth)")
	fs.StringVar(&o.token, "token", "", "bearer token of the reader role (reports; queues UI read-only), at least 16 bytes (prefer NUDGE_TOKEN: flags show in ps)")
	fs.StringVar(&o.basicAuth, "basic-auth", "", "user:password of HTTP basic auth of the reader role, password at least 12 bytes (prefer NUDGE_BASIC_AUTH)")
	fs.StringVar(&o.adminToken, "admin-token", "", "bearer token of the admin role (a reader's rights, and changing tasks in the queues UI), at least 16 bytes, not the reader's (prefer NUDGE_ADMIN_TOKEN)")
	fs.StringVar(&o.adminBasic, "admin-basic-auth", "", "user:password of HTTP basic auth of the admin role, a user name not the reader's (prefer NUDGE_ADMIN_BASIC_AUTH)")
	fs.IntVar(&o.authFailureLimit, "auth-failure-limit", report.DefaultAuthFailureLimit, "failed authentications of one client address before it must wait (1 s, doubling with each further failure, up to 15 min; answered 429); negative: no limit")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client (empty: the client is the TCP peer)")
	fs.BoolVar(&o.queues, "queues", true, "mount asynq's web UI (asynqmon) at /queues")
	fs.BoolVar(&o.queuesReadOnly, "queues-read-only", false, "keep the queues UI read-only for admins too (it always is for readers)")
	fs.IntVar(&o.maxPoints, "max-points", report.DefaultMaxPoints, "most points of one answer")
	fs.DurationVar(&o.queryTimeout, "query-timeout", report.DefaultQueryTimeout, "time limit of one report")
	fs.StringVar(&o.metricsAddr, "metrics-addr", DefaultMetricsAddr, "listen address of /metrics, /healthz and /readyz (empty: none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	conn.register(fs)
	fs.Usage = flagenv.Usage(fs, "report serve: the reports API, dashboard and queues UI")
	return fs
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var (
		conn connFlags
		o    serveOptions
	)
	fs := serveFlags(&conn, &o)
	fs.SetOutput(stdout)
	addr, token, basicAuth, queues, queuesReadOnly := &o.addr, &o.token, &o.basicAuth, &o.queues, &o.queuesReadOnly
	maxPoints, queryTimeout, metricsAddr, logLevel := &o.maxPoints, &o.queryTimeout, &o.metricsAddr, &o.logLevel
	if err := parseFlags(fs, args, getenv, flagenv.EnvName); err != nil {
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
		return fmt.Errorf("%w: -log-level: %w", cli.ErrUsage, err)
	}
	var user, pass, adminUser, adminPass string
	if *basicAuth != "" {
		var ok bool
		if user, pass, ok = strings.Cut(*basicAuth, ":"); !ok {
			return fmt.Errorf("%w: -basic-auth must be user:password", cli.ErrUsage)
		}
	}
	if o.adminBasic != "" {
		var ok bool
		if adminUser, adminPass, ok = strings.Cut(o.adminBasic, ":"); !ok {
			return fmt.Errorf("%w: -admin-basic-auth must be user:password", cli.ErrUsage)
		}
	}
	trusted, err := parsePrefixes(o.trustedProxies)
	if err != nil {
		return fmt.Errorf("%w: -trusted-proxies: %w", cli.ErrUsage, err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))

	reg := telemetry.NewRegistry()
	errs := telemetry.NewErrors(reg, "report")
	rdb, queuesOpt, err := conn.redisClients()
	if err != nil {
		return err
	}
	var checks []telemetry.Check
	if rdb != nil {
		defer rdb.Close()
		rdb.AddHook(telemetry.RedisHook(errs.Redis))
		checks = append(checks, telemetry.RedisCheck(rdb))
	}
	if !*queues {
		queuesOpt = nil
	}
	db, err := conn.postgres.Pool(ctx, telemetry.PGTracer(errs.Postgres))
	if err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	defer db.Close()
	checks = append(checks, telemetry.PostgresCheck(db))
	store, err := report.NewStore(db, report.StoreConfig{Redis: rdb, Keyspace: keys.New(conn.prefix, conn.shards), MaxPoints: *maxPoints})
	if err != nil {
		return err
	}
	var sessions report.Sessions
	if rdb != nil {
		sessions = report.NewRedisSessions(rdb, keys.New(conn.prefix, conn.shards))
	}
	// The server checks its address and auth before anything connects.
	srv, err := report.NewServer(store, report.ServerConfig{
		Addr: *addr, Token: *token, BasicUser: user, BasicPassword: pass,
		AdminToken: o.adminToken, AdminBasicUser: adminUser, AdminBasicPassword: adminPass,
		Queues: queuesOpt, QueuesReadOnly: *queuesReadOnly, QueryTimeout: *queryTimeout, Logger: log,
		AuthFailureLimit: o.authFailureLimit, TrustedProxies: trusted, Metrics: reg, Sessions: sessions,
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
			log.Warn("redis does not answer: live mode, the queues UI and browser sessions will fail until it does", "err", err)
		} else if ok, err := prefixHasKeys(ctx, rdb, keys.New(conn.prefix, conn.shards)); err == nil && !ok {
			log.Warn(noKeysNote(conn.prefix))
		}
	} else if *token != "" || o.adminToken != "" {
		log.Warn("no Redis: a sign-out ends its session on this server only until it restarts, and `report sessions revoke-all` cannot reach it; change the token to end every session")
	}
	return telemetry.RunBeside(ctx, telemetry.ServerConfig{Addr: *metricsAddr, Registry: reg, Checks: checks, Logger: log}, srv.Run)
}

// parsePrefixes parses a comma-separated list of addresses (a /32 or
// /128) and CIDRs.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an IP address nor a CIDR", item)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// sessionsFlags returns the flag set of a `sessions` command: where the
// sessions are (the Redis and key prefix of report serve).
func sessionsFlags(name, summary string, r *datastore.Redis, prefix *string) *flag.FlagSet {
	fs := flag.NewFlagSet("report sessions "+name, flag.ContinueOnError)
	r.Register(fs, datastore.DefaultRedisURL)
	fs.StringVar(prefix, "prefix", keys.DefaultPrefix, "prefix of Nudge's Redis keys (as report serve's)")
	fs.Usage = flagenv.UsageEnv(fs, "report sessions "+name+": "+summary, connEnv)
	return fs
}

func revokeAllFlags(r *datastore.Redis, prefix *string) *flag.FlagSet {
	return sessionsFlags("revoke-all", "sign out every browser session of the report servers on this Redis", r, prefix)
}

// linkOptions are the flags of `sessions sign-in-link`.
type linkOptions struct {
	role, url, next string
	ttl             time.Duration
}

func signInLinkFlags(r *datastore.Redis, prefix *string, o *linkOptions) *flag.FlagSet {
	fs := sessionsFlags("sign-in-link", "print a link that signs one browser in to the report servers on this Redis, once", r, prefix)
	fs.StringVar(&o.role, "role", "reader", "what the browser may do: reader, or admin (the server needs a token of that role: -token, -admin-token)")
	fs.DurationVar(&o.ttl, "ttl", 15*time.Minute, "how long the link can be used (once), at most 24h")
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8090", "the report server's address, as the browser reaches it")
	fs.StringVar(&o.next, "next", "/", "the page to open once signed in, e.g. /?range=1h&live=1")
	return fs
}

// sessions runs `report sessions revoke-all` (every session cookie signed
// so far, by any server sharing the Redis, is refused from now on: the
// epoch of keys.SessionsEpoch moves on; bearer tokens and basic auth are
// not sessions: change them to lock their holders out) and `report
// sessions sign-in-link` (a link that signs one browser in, once).
func sessions(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "revoke-all" && args[0] != "sign-in-link") {
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("%w: report sessions takes a command: revoke-all or sign-in-link", cli.ErrUsage)
	}
	var (
		r      datastore.Redis
		prefix string
		lo     linkOptions
		fs     *flag.FlagSet
	)
	if args[0] == "revoke-all" {
		fs = revokeAllFlags(&r, &prefix)
	} else {
		fs = signInLinkFlags(&r, &prefix, &lo)
	}
	fs.SetOutput(stdout)
	if err := parseFlags(fs, args[1:], getenv, connEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if !r.Enabled() {
		return fmt.Errorf("%w: sessions live in Redis: set -redis-url (NUDGE_REDIS_URL) to report serve's", cli.ErrUsage)
	}
	o, err := r.Options()
	if err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	rdb := o.Client()
	defer rdb.Close()
	ks := keys.New(prefix, 0)
	if args[0] == "revoke-all" {
		if err := report.RevokeAllSessions(ctx, rdb, ks); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "revoked every browser session: sign in again")
		return nil
	}
	rl, err := report.ParseRole(lo.role)
	if err != nil {
		return fmt.Errorf("%w: -role: %w", cli.ErrUsage, err)
	}
	link, err := signInURL(lo.url, lo.next)
	if err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	code, err := report.NewSignInLink(ctx, rdb, ks, rl, lo.ttl)
	if err != nil {
		return err
	}
	q := link.Query()
	q.Set("code", code)
	link.RawQuery = q.Encode()
	fmt.Fprintln(stdout, link.String())
	return nil
}

// signInURL returns the sign-in page of the server at base, going on to
// next (a path of that server).
func signInURL(base, next string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("-url %q: want http(s)://host[:port], without credentials", base)
	}
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return nil, fmt.Errorf("-next %q: want a path of the server, starting with /", next)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/login"
	u.RawQuery = url.Values{"next": {next}}.Encode()
	return u, nil
}

// metrics runs `report metrics`: the metrics a report can be asked for,
// with what they count and how they can be grouped.
func metrics(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report metrics", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintln(stdout, "report metrics: list the metrics of report print -metric and GET /api/series")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: report metrics takes no arguments", cli.ErrUsage)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tGROUP BY\tCOUNTS")
	for _, m := range report.Metrics() {
		dims := make([]string, len(m.Dims))
		for i, d := range m.Dims {
			dims[i] = string(d)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, strings.Join(dims, ","), m.Description)
	}
	return tw.Flush()
}

// queryFlags are the settings print and effectiveness share: where the
// counters are, the range and its time zone, the filters, the output.
type queryFlags struct {
	conn                                connFlags
	from, to, tz, app, platform, format string
	live                                bool
}

// register adds the shared flags to fs; from is -from's default, tz and
// platform say what -tz and -platform mean to the command.
func (q *queryFlags) register(fs *flag.FlagSet, from, tz, platform string) {
	fs.StringVar(&q.from, "from", from, "start: now, -24h, -7d, 2026-03-01, or RFC 3339")
	fs.StringVar(&q.to, "to", "now", "end, excluded; same forms as -from")
	fs.StringVar(&q.tz, "tz", "UTC", tz)
	fs.StringVar(&q.app, "app", "", "only this app")
	fs.StringVar(&q.platform, "platform", "", platform)
	fs.StringVar(&q.format, "format", "table", "table or csv")
	fs.BoolVar(&q.live, "live", false, "add the counters not yet flushed, from Redis")
	q.conn.register(fs)
}

// parse reads fs's flags (and the connection's variables) from args, and
// checks the shared ones. It returns flag.ErrHelp for -h.
func (q *queryFlags) parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := parseFlags(fs, args, getenv, connEnv); err != nil {
		return err
	}
	if err := q.conn.check(); err != nil {
		return err
	}
	if q.format != "table" && q.format != "csv" {
		return cli.Usagef("-format must be table or csv, not %q", q.format)
	}
	return nil
}

// rangeQuery is the range and filters of the flags, the times read in
// their time zone.
func (q *queryFlags) rangeQuery(now time.Time) (report.RangeQuery, *time.Location, error) {
	r := report.RangeQuery{Filter: report.Filter{App: q.app, Platform: q.platform}, Live: q.live}
	loc, err := report.LoadLocation(q.tz)
	if err != nil {
		return r, nil, cli.Usage(fmt.Errorf("-%w", err))
	}
	if r.From, err = report.ParseTime(q.from, now, loc); err != nil {
		return r, nil, cli.Usagef("-from %q: %v", q.from, err)
	}
	if r.To, err = report.ParseTime(q.to, now, loc); err != nil {
		return r, nil, cli.Usagef("-to %q: %v", q.to, err)
	}
	return r, loc, nil
}

// queryError marks the store's refusal of a parameter as a usage error.
func queryError(err error) error {
	var pe *report.ParamError
	if errors.As(err, &pe) {
		return cli.Usage(fmt.Errorf("-%w", err))
	}
	return err
}

type printOptions struct {
	queryFlags
	metric, step, reason, group string
}

// printFlags returns the flag set of print, writing into o.
func printFlags(o *printOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("report print", flag.ContinueOnError)
	o.register(fs, "-24h", "IANA time zone of the buckets, e.g. Europe/Berlin", "only this platform (fcm, apns)")
	fs.StringVar(&o.metric, "metric", "", "metric to print (required), e.g. messages_sent")
	fs.StringVar(&o.step, "step", "hour", "minute, hour or day")
	fs.StringVar(&o.reason, "reason", "", "only this reason")
	fs.StringVar(&o.group, "group", "", "a row per app, platform or reason")
	fs.Usage = flagenv.UsageEnv(fs, "report print: print a series of a metric", connEnv)
	return fs
}

func printSeries(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o printOptions
	fs := printFlags(&o)
	fs.SetOutput(stdout)
	if err := o.parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	r, loc, err := o.rangeQuery(time.Now())
	if err != nil {
		return err
	}
	q := report.SeriesQuery{Metric: o.metric, Filter: r.Filter, From: r.From, To: r.To, Location: loc, Live: r.Live}
	q.Filter.Reason = o.reason
	if q.Step, err = report.ParseStep(o.step); err != nil {
		return cli.Usage(fmt.Errorf("-%w", err))
	}
	if q.Group, err = report.ParseDimension(o.group); err != nil {
		return cli.Usage(fmt.Errorf("-%w", err))
	}

	store, rdb, closeStore, err := o.conn.openStore(ctx, q.Live)
	if err != nil {
		return err
	}
	defer closeStore()
	s, err := store.Series(ctx, q)
	if err != nil {
		return queryError(err)
	}
	var note string
	if q.Live {
		if ok, err := prefixHasKeys(ctx, rdb, keys.New(o.conn.prefix, o.conn.shards)); err == nil && !ok {
			note = noKeysNote(o.conn.prefix)
		}
	}
	if o.format == "csv" {
		if note != "" { // not in the CSV
			fmt.Fprintln(os.Stderr, "report: note:", note)
		}
		return s.WriteCSV(stdout)
	}
	if err := writeTable(stdout, s); err != nil {
		return err
	}
	if note != "" {
		fmt.Fprintln(stdout, "note:", note)
	}
	return nil
}

// openStore opens the report store of a command: PostgreSQL, and Redis
// for live counters when live is set. close releases both.
func (conn *connFlags) openStore(ctx context.Context, live bool) (store *report.Store, rdb redis.UniversalClient, close func(), err error) {
	if live {
		if !conn.redis.Enabled() {
			return nil, nil, nil, fmt.Errorf("%w: -live needs -redis-url", cli.ErrUsage)
		}
		if rdb, _, err = conn.redisClients(); err != nil {
			return nil, nil, nil, err
		}
	}
	db, err := conn.postgres.Pool(ctx, nil)
	if err != nil {
		if rdb != nil {
			rdb.Close()
		}
		return nil, nil, nil, fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	close = func() {
		db.Close()
		if rdb != nil {
			rdb.Close()
		}
	}
	if store, err = report.NewStore(db, report.StoreConfig{Redis: rdb, Keyspace: keys.New(conn.prefix, conn.shards)}); err != nil {
		close()
		return nil, nil, nil, err
	}
	return store, rdb, close, nil
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
