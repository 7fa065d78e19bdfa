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

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flagenv.NewFlagSet("chaos", "chaos: crash the pipeline while it works and check its promises", flagenv.ScopedName("chaos"))
	var (
		redisAddr = fs.String("redis-addr", "127.0.0.1:6379", "Redis address")
		adminURL  = fs.String("database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server; the run creates its own database on it")
		events    = fs.Int64("events", 200_000, "events to publish")
		rate      = fs.Float64("rate", 2000, "events per second")
		killEvery = fs.Duration("kill-every", 3*time.Second, "time between two SIGKILLs")
		seed      = fs.Uint64("seed", 0, "seed of the traffic and of the kills (0: from the clock)")
		asJSON    = fs.Bool("json", false, "print the report as JSON")
		restart   restartFlags
	)
	restart.register(fs.FlagSet)
	// NUDGE_CHAOS_*, never the services' NUDGE_*: the run creates and drops
	// databases and keys of its own, and must not do so on production's.
	if err := cli.Parse(fs, args, getenv, true); err != nil {
		return err
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	name := "nudge_chaos_" + strconv.FormatUint(*seed%1_000_000, 10)
	dbURL, err := datastore.CreateDatabase(ctx, *adminURL, name)
	if err != nil {
		return err
	}
	defer func() { _ = datastore.DropDatabase(context.Background(), *adminURL, name) }()
	if restart.enabled {
		return runRedisRestart(ctx, restart, dbURL, *events, *rate, *seed, *asJSON, stdout)
	}
	rep, err := chaos.Run(ctx, chaos.Config{
		RedisAddr: *redisAddr, DatabaseURL: dbURL, Prefix: "chaos" + strconv.FormatUint(*seed%1_000_000, 10),
		Events: *events, Rate: *rate, KillEvery: *killEvery, Seed: *seed,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	return finish(stdout, rep, *seed, *asJSON)
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
