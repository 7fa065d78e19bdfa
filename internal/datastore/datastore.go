// Package datastore holds the connection settings every Nudge command
// shares, and builds the clients from them: a go-redis UniversalClient and
// the matching asynq RedisConnOpt for Redis (one server or a Redis
// Cluster, TLS, ACL user), and a pgx pool for PostgreSQL.
//
// The settings are the same flags with the same NUDGE_* environment
// variables in every command (package flagenv):
//
//	-redis-url      redis://[user:password@]host:port/db, or rediss:// for TLS
//	-redis-cluster  host:port,host:port,... of a Redis Cluster; when set, the
//	                user, password and TLS of -redis-url still apply, its
//	                host and database do not (a cluster has database 0 only)
//	-redis-ca-file  PEM file of the CA that signed the Redis servers'
//	                certificates (with rediss://; default: the system roots)
//	-database-url   postgres://user:password@host:port/db?sslmode=verify-full&sslrootcert=/ca.pem
//	                (pgx reads sslmode, sslrootcert, sslcert and sslkey from the URL)
//
// Prefer the environment for URLs that hold passwords: flags show in ps.
package datastore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultRedisURL is the default of -redis-url.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// ErrSettings is wrapped by every error of a bad setting; the message names
// the flag.
var ErrSettings = errors.New("bad setting")

// Redis holds where Redis is. The zero value is not valid: use Register or
// set URL.
type Redis struct {
	// URL is redis:// or rediss:// with the ACL user and password, host,
	// port and database. Flag -redis-url, default DefaultRedisURL.
	URL string
	// Cluster is the comma-separated host:port seed list of a Redis
	// Cluster; empty for a single server. Flag -redis-cluster.
	Cluster string
	// CAFile is a PEM file of CAs to trust for rediss:// instead of the
	// system roots. Flag -redis-ca-file.
	CAFile string
}

// Register adds -redis-url, -redis-cluster and -redis-ca-file to fs.
// defaultURL is the default of -redis-url ("" for none).
func (r *Redis) Register(fs *flag.FlagSet, defaultURL string) {
	fs.StringVar(&r.URL, "redis-url", defaultURL, "Redis URL: redis://[user:password@]host:port/db, rediss:// for TLS (prefer NUDGE_REDIS_URL for a password: flags show in ps)")
	fs.StringVar(&r.Cluster, "redis-cluster", "", "comma-separated host:port seeds of a Redis Cluster (empty: a single server); user, password and TLS still come from -redis-url")
	fs.StringVar(&r.CAFile, "redis-ca-file", "", "PEM CA certificates to trust for rediss:// (default: the system roots)")
}

// Enabled reports whether Redis is configured at all (commands where it is
// optional take an empty -redis-url as "no Redis").
func (r Redis) Enabled() bool { return r.URL != "" || r.Cluster != "" }

// Options is what Redis settings resolve to: the options of both clients.
type Options struct {
	// Single is set for a single server, Cluster for a Redis Cluster.
	Single  *redis.Options
	Cluster *redis.ClusterOptions
}

// Options validates the settings and resolves them. Errors wrap
// ErrSettings and name the flag.
func (r Redis) Options() (Options, error) {
	url := r.URL
	if url == "" {
		if r.Cluster == "" {
			return Options{}, fmt.Errorf("%w: -redis-url is empty", ErrSettings)
		}
		url = "redis://"
	}
	u, err := redis.ParseURL(url)
	if err != nil {
		return Options{}, fmt.Errorf("%w: -redis-url: %w", ErrSettings, err)
	}
	// go-redis sends CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS on every
	// new connection; servers before 7.2 (and ACL users without those
	// subcommands) refuse them, which would count as Redis errors in
	// nudge_redis_errors_total on every connect. Nudge needs neither.
	u.DisableIdentity = true
	u.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if r.CAFile != "" {
		if u.TLSConfig == nil {
			return Options{}, fmt.Errorf("%w: -redis-ca-file is set but -redis-url is not rediss:// (TLS)", ErrSettings)
		}
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			return Options{}, fmt.Errorf("%w: -redis-ca-file: %w", ErrSettings, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return Options{}, fmt.Errorf("%w: -redis-ca-file %s: no PEM certificate in it", ErrSettings, r.CAFile)
		}
		u.TLSConfig.RootCAs = pool
	}
	if r.Cluster == "" {
		return Options{Single: u}, nil
	}
	var addrs []string
	for a := range strings.SplitSeq(r.Cluster, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return Options{}, fmt.Errorf("%w: -redis-cluster: %q is not host:port", ErrSettings, a)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return Options{}, fmt.Errorf("%w: -redis-cluster lists no address", ErrSettings)
	}
	if r.URL != "" && u.DB != 0 {
		return Options{}, fmt.Errorf("%w: -redis-url selects database %d, but a Redis Cluster has database 0 only", ErrSettings, u.DB)
	}
	var tlsConf *tls.Config
	if u.TLSConfig != nil {
		tlsConf = u.TLSConfig.Clone()
		tlsConf.ServerName = "" // each node's own host name
	}
	return Options{Cluster: &redis.ClusterOptions{
		Addrs: addrs, Username: u.Username, Password: u.Password, TLSConfig: tlsConf,
		DialTimeout: u.DialTimeout, ReadTimeout: u.ReadTimeout, WriteTimeout: u.WriteTimeout,
		PoolSize: u.PoolSize, MinIdleConns: u.MinIdleConns, MaxRetries: u.MaxRetries,
		DisableIdentity: true, MaintNotificationsConfig: u.MaintNotificationsConfig,
	}}, nil
}

// Describe names the Redis for logs, without credentials.
func (o Options) Describe() string {
	if o.Cluster != nil {
		return "cluster " + strings.Join(o.Cluster.Addrs, ",")
	}
	if o.Single == nil {
		return "none"
	}
	return o.Single.Addr
}

// Client returns Nudge's client: a ClusterClient for a cluster, else a
// Client.
func (o Options) Client() redis.UniversalClient {
	if o.Cluster != nil {
		return redis.NewClusterClient(o.Cluster)
	}
	return redis.NewClient(o.Single)
}

// Asynq returns asynq's options for the same Redis.
func (o Options) Asynq() asynq.RedisConnOpt {
	if o.Cluster != nil {
		c := o.Cluster
		return asynq.RedisClusterClientOpt{Addrs: c.Addrs, Username: c.Username, Password: c.Password, TLSConfig: c.TLSConfig}
	}
	s := o.Single
	return asynq.RedisClientOpt{Network: s.Network, Addr: s.Addr, Username: s.Username, Password: s.Password,
		DB: s.DB, TLSConfig: s.TLSConfig, PoolSize: s.PoolSize}
}

// Postgres holds where PostgreSQL is.
type Postgres struct {
	// URL is a PostgreSQL connection URL (or key=value string); TLS through
	// its sslmode, sslrootcert, sslcert and sslkey parameters. Flag
	// -database-url.
	URL string
}

// postgresUsage is the help of -database-url; commands add what it is for.
const postgresUsage = "PostgreSQL URL; TLS: ?sslmode=verify-full&sslrootcert=/path/ca.pem (prefer NUDGE_DATABASE_URL for a password)"

// Register adds -database-url to fs; what says what the database is used
// for in this command.
func (p *Postgres) Register(fs *flag.FlagSet, defaultURL, what string) {
	usage := postgresUsage
	if what != "" {
		usage = what + ". " + usage
	}
	fs.StringVar(&p.URL, "database-url", defaultURL, usage)
}

// Config validates the URL and returns the pool's configuration. Errors
// wrap ErrSettings and name the flag; pgx keeps the password out of them.
func (p Postgres) Config() (*pgxpool.Config, error) {
	if p.URL == "" {
		return nil, fmt.Errorf("%w: no database: set -database-url or NUDGE_DATABASE_URL", ErrSettings)
	}
	c, err := pgxpool.ParseConfig(p.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: -database-url: %w", ErrSettings, err)
	}
	return c, nil
}

// Pool validates the URL and opens a pool (lazily: it does not connect).
// tracer, if not nil, sees every query (telemetry counts errors with it).
func (p Postgres) Pool(ctx context.Context, tracer pgx.QueryTracer) (*pgxpool.Pool, error) {
	c, err := p.Config()
	if err != nil {
		return nil, err
	}
	if tracer != nil {
		c.ConnConfig.Tracer = tracer
	}
	db, err := pgxpool.NewWithConfig(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("-database-url: %w", err)
	}
	return db, nil
}
