// Command bench measures Nudge on this machine against the raw limits of
// the same Redis and PostgreSQL, measured in the same run (package bench),
// prints a table and writes the figures as JSON. It needs Redis and
// PostgreSQL (scripts/services.sh) and is run from the repository root:
//
//	make bench                 # about 5 minutes
//	BENCH_QUICK=1 make bench   # under 2 minutes, smaller runs
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/nudgehq/nudge/bench"
	"github.com/nudgehq/nudge/internal/flagenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		redisAddr = fs.String("redis-addr", "127.0.0.1:6379", "Redis to measure (the run uses keys of its own and deletes them)")
		adminURL  = fs.String("database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL server; the run creates and drops a database of its own")
		quick     = fs.Bool("quick", getenv("BENCH_QUICK") == "1", "smaller runs, under two minutes (also BENCH_QUICK=1)")
		out       = fs.String("json", "bench.json", "file the figures are written to (empty: none)")
	)
	fs.Usage = flagenv.Usage(fs, "bench: measure Nudge against the raw limits of its Redis and PostgreSQL")
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		return err
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
	row("ingest, Redis time per 1-recipient event", fmt.Sprintf("%.1f µs", r.IngestRedisUsPerEvent), "", 0, "≤ 10 µs")
	row(fmt.Sprintf("one message to %d members, applied", r.BurstMembers), ms(r.BurstApplyMs), "", 0, "≤ 500 ms")
	row("  longest apply script meanwhile", ms(r.BurstMaxScriptMs), "", 0, "a few ms")
	row("ingest, 10-recipient messages", perS(r.Group10EventsPerS, "events"), perS(r.Group10RawEventsPerS, "events"), r.Group10Ratio, "reported")
	row(fmt.Sprintf("publish → counter, %.0f ev/s, p50", r.LatencyRate), ms(r.LatencyP50Ms), ms(r.LatencyRawP50Ms), 0, "")
	row(fmt.Sprintf("publish → counter, %.0f ev/s, p99", r.LatencyRate), ms(r.LatencyP99Ms), ms(r.LatencyRawP99Ms), 0, "≤ 5 ms")
	row("reminder fire lateness p50", ms(r.FireLatenessP50Ms), "", 0, "")
	row("reminder fire lateness p99", ms(r.FireLatenessP99Ms), "", 0, "≤ 1500 ms")
	row("reminders fired early", fmt.Sprintf("%d of %d", r.FireEarlyCount, r.FireCount), "", 0, "0")
	row("reminder scheduling", perS(r.SchedulePerS, "reminders"), perS(r.ScheduleRawPerS, "enqueues"), r.ScheduleRatio, "≥ 0.8")
	row("pushes through the worker", perS(r.PushPerS, "pushes"), perS(r.PushRawPerS, "pushes"), r.PushRatio, "≥ 0.5")
	row("flush, 100k rows (half updates)", perS(r.FlushRowsPerS, "rows"), perS(r.FlushRawRowsPerS, "rows")+" (1 table)", r.FlushRatio, "≥ 0.7")
	row("", "", perS(r.FlushRaw3TablesRowsPS, "rows")+" (3 tables)", r.FlushRatio3Tables, "")
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
