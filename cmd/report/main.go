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
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	_ "time/tzdata" // time zones of queries even on hosts without zoneinfo

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

func main() {
	cli.Run("report", run)
}

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
		return cli.Usage(err)
	}
	if c.redis.Enabled() {
		if _, err := c.redis.Options(); err != nil {
			return cli.Usage(err)
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

// metrics runs `report metrics`: the metrics a report can be asked for,
// with what they count and how they can be grouped.
func metrics(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report metrics", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintln(stdout, "report metrics: list the metrics of report print -metric and GET /api/series")
	}
	if err := fs.Parse(args); err != nil {
		return cli.Usage(err)
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
