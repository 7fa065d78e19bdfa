// Command chaos runs the pipeline under crashes and push provider failures
// and checks Nudge's promises (see package internal/chaos). It needs Redis and
// PostgreSQL (scripts/services.sh) and is run from the repository root:
//
//	go run ./cmd/chaos -events 200000 -rate 2000
//
// With -redis-restart it runs the pipeline against a redis-server of its
// own instead, and stops and starts that server while the traffic flows:
//
//	go run ./cmd/chaos -redis-restart -events 50000 -rate 1000 -restarts 4 -redis-pauses 1.5s,5s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nudgehq/nudge/internal/chaos"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
)

func main() {
	cli.Run("chaos", run)
}

// options are the command's settings.
type options struct {
	redisAddr string
	adminURL  string
	events    int64
	rate      float64
	killEvery time.Duration
	seed      uint64
	asJSON    bool
	restart   restartFlags
}

// flags returns the command's flag set, writing into o. Its variables are
// NUDGE_CHAOS_*, never the services' NUDGE_*: the run creates and drops
// databases and keys of its own, and must not do so on production's.
func flags(o *options) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("chaos", "chaos: crash the pipeline while it works and check its promises", flagenv.ScopedName("chaos"))
	fs.StringVar(&o.redisAddr, "redis-addr", "127.0.0.1:6379", "Redis address")
	fs.StringVar(&o.adminURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server; the run creates its own database on it")
	fs.Int64Var(&o.events, "events", 200_000, "events to publish")
	fs.Float64Var(&o.rate, "rate", 2000, "events per second")
	fs.DurationVar(&o.killEvery, "kill-every", 3*time.Second, "time between two SIGKILLs")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the traffic and of the kills (0: from the clock)")
	fs.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	o.restart.register(fs.FlagSet)
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	if err := cli.Parse(flags(&o), args, getenv, true); err != nil {
		return err
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	name := "nudge_chaos_" + strconv.FormatUint(o.seed%1_000_000, 10)
	dbURL, err := datastore.CreateDatabase(ctx, o.adminURL, name)
	if err != nil {
		return err
	}
	defer func() { _ = datastore.DropDatabase(context.Background(), o.adminURL, name) }()
	if o.restart.enabled {
		return runRedisRestart(ctx, o, dbURL, stdout)
	}
	rep, err := chaos.Run(ctx, chaos.Config{
		RedisAddr: o.redisAddr, DatabaseURL: dbURL, Prefix: "chaos" + strconv.FormatUint(o.seed%1_000_000, 10),
		Events: o.events, Rate: o.rate, KillEvery: o.killEvery, Seed: o.seed,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	return finish(stdout, rep, o.seed, o.asJSON)
}

// report is what a run of either mode found.
type report interface {
	Passed() bool
	WriteText(w io.Writer, seed uint64)
}

// finish prints the report, as JSON or text, and fails unless every
// promise held.
func finish(stdout io.Writer, rep report, seed uint64, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.WriteText(stdout, seed)
	}
	if !rep.Passed() {
		return errors.New("promises broken")
	}
	fmt.Fprintln(stdout, "passed")
	return nil
}
