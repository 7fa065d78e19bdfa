package main

// report serve: the API, the dashboard and the queues UI.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/telemetry"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

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
func serveFlags(conn *connFlags, o *serveOptions) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("report serve", "report serve: the reports API, dashboard and queues UI", flagenv.EnvName)
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
	fs.StringVar(&o.metricsAddr, "metrics-addr", cli.ReportMetricsAddr, "listen address of /metrics, /healthz and /readyz (empty: none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	conn.register(fs.FlagSet)
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
	if err := cli.Parse(fs, args, getenv, false); err != nil {
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
