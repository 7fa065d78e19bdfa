// Command bench measures Nudge on this machine against the raw limits of
// the same Redis and PostgreSQL, measured in the same run (package internal/bench),
// prints a table and writes the figures as JSON. It needs Redis and
// PostgreSQL (scripts/services.sh) and is run from the repository root:
//
//	make bench                 # about 5 minutes
//	BENCH_QUICK=1 make bench   # under 2 minutes, smaller runs
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/nudgehq/nudge/internal/bench"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
)

func main() {
	cli.Main("bench", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr) })
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flagenv.NewFlagSet("bench", "bench: measure Nudge against the raw limits of its Redis and PostgreSQL", flagenv.ScopedName("bench"))
	fs.SetOutput(stderr)
	var (
		redisAddr = fs.String("redis-addr", "127.0.0.1:6379", "Redis to measure (the run uses keys of its own and deletes them)")
		adminURL  = fs.String("database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server; the run creates and drops a database of its own")
		quick     = fs.Bool("quick", getenv("BENCH_QUICK") == "1", "smaller runs, under two minutes (also BENCH_QUICK=1)")
		steps     = fs.String("steps", "all", "measurements to run, comma-separated: "+strings.Join(bench.Steps, ", ")+" (the others' figures stay 0)")
		out       = fs.String("json", "bench.json", "file the figures are written to (empty: none)")
		plan      = fs.Bool("plan", false, "measure nothing: print the Redis Cluster masters, shards and replicas a load needs, from the per-unit costs of a run")
		costsFrom = fs.String("costs", "", "with -plan: a bench.json to take the per-unit costs from (default: those of the last full run in BENCHMARKS.md)")
		cores     = fs.Int("cores", 2, "with -plan and -costs: the cores of the machine the run was on")
		load      = bench.DefaultLoad
		sizing    = bench.DefaultSizing
		memGiB    = sizing.MemoryPerMaster / (1 << 30)
	)
	load.DAU = 10_000_000
	fs.Float64Var(&load.DAU, "dau", load.DAU, "with -plan: daily active users")
	fs.Float64Var(&load.MessagesPerUser, "messages-per-user", load.MessagesPerUser, "with -plan: messages an active user sends a day")
	fs.Float64Var(&load.GroupShare, "group-share", load.GroupShare, "with -plan: share of messages sent to groups (0 to 1)")
	fs.Float64Var(&load.GroupSize, "group-size", load.GroupSize, "with -plan: mean recipients of a group message")
	fs.Float64Var(&load.ReadsPerMessage, "reads-per-message", load.ReadsPerMessage, "with -plan: read events per message")
	fs.Float64Var(&load.EpisodeShare, "episode-share", load.EpisodeShare, "with -plan: share of recipients a message opens an unread episode for")
	fs.Float64Var(&load.ReadBeforeDue, "read-before-due", load.ReadBeforeDue, "with -plan: share of episodes read before their first reminder")
	fs.Float64Var(&load.DevicesPerUser, "devices-per-user", load.DevicesPerUser, "with -plan: push devices per user")
	fs.Float64Var(&load.UnreadHours, "unread-hours", load.UnreadHours, "with -plan: mean hours an episode stays open")
	fs.Float64Var(&load.PeakFactor, "peak-factor", load.PeakFactor, "with -plan: busiest second over the mean second")
	fs.Float64Var(&sizing.RedisCoreShare, "redis-core-share", sizing.RedisCoreShare, "with -plan: share of a master's core Nudge may use")
	fs.Float64Var(&memGiB, "memory-per-master-gib", memGiB, "with -plan: GiB of data a master may hold")
	fs.Float64Var(&sizing.CoresPerReplica, "cores-per-replica", sizing.CoresPerReplica, "with -plan: cores of a worker or ingest replica")
	fs.IntVar(&sizing.PushConcurrency, "push-concurrency", sizing.PushConcurrency, "with -plan: sends in flight a worker replica (worker -push-concurrency)")
	fs.Float64Var(&sizing.ProviderLatency, "provider-latency", sizing.ProviderLatency, "with -plan: seconds a push provider takes to answer a send (the worker's nudge_push_duration_seconds)")
	// NUDGE_BENCH_*, never the services' NUDGE_*: the run creates and drops
	// databases and keys of its own, and must not do so on production's.
	if err := cli.Parse(fs, args, getenv, true); err != nil {
		return err
	}
	if *plan {
		costs := bench.MeasuredCosts
		if *costsFrom != "" {
			var err error
			if costs, err = bench.CostsFromFile(*costsFrom, *cores, costs); err != nil {
				return err
			}
		}
		sizing.MemoryPerMaster = memGiB * (1 << 30)
		if err := bench.CheckPlan(load, sizing); err != nil {
			return cli.Usage(err)
		}
		bench.PlanFor(load, costs, sizing).Print(stdout)
		return nil
	}
	only, err := bench.ParseSteps(*steps)
	if err != nil {
		return cli.Usage(fmt.Errorf("-steps: %w", err))
	}
	res, err := bench.Run(ctx, bench.Config{RedisAddr: *redisAddr, AdminURL: *adminURL, Quick: *quick, Steps: only,
		Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	if err != nil {
		return err
	}
	res.WriteTable(stdout)
	if *out != "" {
		if err := res.WriteFile(*out); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", *out)
	}
	return nil
}
