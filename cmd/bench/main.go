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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/nudgehq/nudge/internal/bench"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
)

func main() {
	cli.Main("bench", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr) })
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		redisAddr = fs.String("redis-addr", "127.0.0.1:6379", "Redis to measure (the run uses keys of its own and deletes them)")
		adminURL  = fs.String("database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server; the run creates and drops a database of its own")
		quick     = fs.Bool("quick", getenv("BENCH_QUICK") == "1", "smaller runs, under two minutes (also BENCH_QUICK=1)")
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
	fs.Usage = flagenv.UsageEnv(fs, "bench: measure Nudge against the raw limits of its Redis and PostgreSQL", flagenv.ScopedName("bench"))
	// NUDGE_BENCH_*, never the services' NUDGE_*: the run creates and drops
	// databases and keys of its own, and must not do so on production's.
	if err := cli.ParseScoped(fs, args, getenv, "bench", true); err != nil {
		return err
	}
	if *plan {
		costs := bench.MeasuredCosts
		if *costsFrom != "" {
			b, err := os.ReadFile(*costsFrom)
			if err != nil {
				return err
			}
			var r bench.Result
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", *costsFrom, err)
			}
			costs = bench.CostsOf(&r, *cores, costs)
		}
		if load.DAU <= 0 || load.MessagesPerUser <= 0 || load.GroupShare < 0 || load.GroupShare > 1 || load.GroupSize < 1 ||
			load.ReadBeforeDue < 0 || load.ReadBeforeDue > 1 || load.EpisodeShare < 0 || load.EpisodeShare > 1 || load.PeakFactor < 1 ||
			sizing.RedisCoreShare <= 0 || sizing.RedisCoreShare > 1 || memGiB <= 0 || sizing.CoresPerReplica <= 0 {
			return errors.New("-plan: -dau and -messages-per-user must be positive, shares within 0 to 1, -group-size and -peak-factor at least 1, sizes positive")
		}
		sizing.MemoryPerMaster = memGiB * (1 << 30)
		bench.PlanFor(load, costs, sizing).Print(stdout)
		return nil
	}
	res, err := bench.Run(ctx, bench.Config{RedisAddr: *redisAddr, AdminURL: *adminURL, Quick: *quick,
		Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	if err != nil {
		return err
	}
	printTable(stdout, res)
	if *out != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", *out)
	}
	return nil
}

func printTable(w io.Writer, r *bench.Result) {
	fmt.Fprintf(w, "%s\n\n", r.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tNudge\traw, same run\tratio\ttarget")
	row := func(what, nudge, raw string, ratio float64, target string) {
		rs := "—"
		if ratio > 0 {
			rs = fmt.Sprintf("%.2f", ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", what, nudge, raw, rs, target)
	}
	row("ingest, 1-recipient messages", perS(r.IngestEventsPerS, "events"), perS(r.IngestRawEventsPerS, "events"), r.IngestRatio, "≥ 0.5")
	row("ingest, Redis CPU per 1-recipient event", fmt.Sprintf("%.1f µs (scripts %.1f µs)", r.IngestRedisUsPerEvent, r.IngestScriptUsPerEvent),
		fmt.Sprintf("%.1f µs", r.IngestRawRedisUsPerEvent), 0, "≤ 10 µs")
	row(fmt.Sprintf("one message to %d members, applied", r.BurstMembers), ms(r.BurstApplyMs), "", 0, "≤ 500 ms")
	row("  longest apply script meanwhile", ms(r.BurstMaxScriptMs), "", 0, "a few ms")
	row(fmt.Sprintf("one message to %d members, push lateness p50", r.BurstPushes), ms(r.BurstLatenessP50Ms), "", 0, "")
	row(fmt.Sprintf("one message to %d members, push lateness p99", r.BurstPushes), ms(r.BurstLatenessP99Ms), "", 0, "≤ 2000 ms")
	row("  their pushes", perS(r.BurstPushesPerS, "pushes"), "", 0, "")
	row("  pushed early", strconv.Itoa(r.BurstEarly), "", 0, "0")
	row("ingest, 10-recipient messages", perS(r.Group10EventsPerS, "events"), perS(r.Group10RawEventsPerS, "events"), r.Group10Ratio, "reported")
	row(fmt.Sprintf("publish → counter, %.0f ev/s, p50", r.LatencyRate), ms(r.LatencyP50Ms), ms(r.LatencyRawP50Ms), 0, "")
	row(fmt.Sprintf("publish → counter, %.0f ev/s, p99", r.LatencyRate), ms(r.LatencyP99Ms), ms(r.LatencyRawP99Ms), 0, "≤ 5 ms")
	row("reminder fire lateness p50", ms(r.FireLatenessP50Ms), "", 0, "")
	row("reminder fire lateness p99", ms(r.FireLatenessP99Ms), "", 0, "≤ 1500 ms")
	row("reminders fired early", fmt.Sprintf("%d of %d", r.FireEarlyCount, r.FireCount), "", 0, "0")
	row("reminder scheduling", perS(r.SchedulePerS, "reminders"), perS(r.ScheduleRawPerS, "enqueues"), r.ScheduleRatio, "≥ 0.8")
	row("pushes through the worker", perS(r.PushPerS, "pushes"), perS(r.PushRawPerS, "pushes"), r.PushRatio, "≥ 0.6")
	row("flush, 100k rows (half updates)", perS(r.FlushRowsPerS, "rows"), perS(r.FlushRawRowsPerS, "rows")+" (1 table)", r.FlushRatio, "≥ 0.7")
	row("", "", perS(r.FlushRaw3TablesRowsPS, "rows")+" (3 tables)", r.FlushRatio3Tables, "")
	row(fmt.Sprintf("first reminders pushed, reacted to (open %.0f %%, read %.0f %% of pushes)", 100*r.EffectSimOpenRate, 100*r.EffectSimPushReadRate),
		strconv.FormatInt(r.EffectPushed, 10), "", 0, "")
	row("  opened (report)", fmt.Sprintf("%d (%.1f %%)", r.EffectOpened, 100*r.EffectOpenRate), "", 0, "")
	row("  converted by a read (report)", fmt.Sprintf("%d (%.1f %%)", r.EffectConverted, 100*r.EffectConversionRate), "", 0, "")
	row("Redis per open episode", fmt.Sprintf("%.0f B", r.RedisBytesPerEpisode), "", 0, "bounded")
	row("Redis per idle user", fmt.Sprintf("%.0f B", r.RedisBytesPerIdleUser), "", 0, "bounded")
	for _, name := range []string{"ingest", "worker", "flusher"} {
		row("peak RSS, "+name, fmt.Sprintf("%.1f MiB", r.PeakRSSMiB[name]), "", 0, "")
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%.0f s\n", r.Seconds)
}

func perS(v float64, unit string) string { return fmt.Sprintf("%.0f %s/s", v, unit) }

func ms(v float64) string { return fmt.Sprintf("%.2f ms", v) }
