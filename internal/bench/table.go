package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
)

// WriteTable writes the figures as a table: what, Nudge, the raw limit of
// the same run, their ratio, and the target.
func (r *Result) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%s\n\n", r.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tNudge\traw, same run\tratio\ttarget")
	// Each group of rows belongs to a step (Steps); a run of some steps
	// only (-steps) shows theirs.
	step := ""
	row := func(what, nudge, raw string, ratio float64, target string) {
		if step != "" && len(r.Steps) > 0 && !slices.Contains(r.Steps, step) {
			return
		}
		rs := "—"
		if ratio > 0 {
			rs = fmt.Sprintf("%.2f", ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", what, nudge, raw, rs, target)
	}
	step = "ingest"
	row("ingest, 1-recipient messages", perS(r.IngestEventsPerS, "events"), perS(r.IngestRawEventsPerS, "events"), r.IngestRatio, "≥ 0.5")
	row("ingest, Redis CPU per 1-recipient event", fmt.Sprintf("%.1f µs (scripts %.1f µs)", r.IngestRedisUsPerEvent, r.IngestScriptUsPerEvent),
		fmt.Sprintf("%.1f µs", r.IngestRawRedisUsPerEvent), 0, "≤ 10 µs")
	row("  Redis commands per 1-recipient event", fmt.Sprintf("%.2f", r.IngestRedisCommandsPerEvent),
		fmt.Sprintf("%.2f", r.IngestRawRedisCommandsPerEvent), 0, "")
	step = "burst"
	row(fmt.Sprintf("one message to %d members, applied", r.BurstMembers), ms(r.BurstApplyMs), "", 0, "≤ 500 ms")
	row("  longest apply script meanwhile", ms(r.BurstMaxScriptMs), "", 0, "a few ms")
	row(fmt.Sprintf("one message to %d members, push lateness p50", r.BurstPushes), ms(r.BurstLatenessP50Ms), "", 0, "")
	row(fmt.Sprintf("one message to %d members, push lateness p99", r.BurstPushes), ms(r.BurstLatenessP99Ms), "", 0, "≤ 2000 ms")
	row("  the same after publish time + delay (upper bound)", ms(r.BurstPublishLatenessP99Ms), "", 0, "")
	row("  their pushes", perS(r.BurstPushesPerS, "pushes"), "", 0, "")
	row("  pushed early", strconv.Itoa(r.BurstEarly), "", 0, "0")
	step = "ingest"
	row("ingest, 10-recipient messages", perS(r.Group10EventsPerS, "events"), perS(r.Group10RawEventsPerS, "events"), r.Group10Ratio, "reported")
	step = "latency"
	row(fmt.Sprintf("publish → counter, %.0f ev/s, p50", r.LatencyRate), ms(r.LatencyP50Ms), ms(r.LatencyRawP50Ms), 0, "")
	row(fmt.Sprintf("publish → counter, %.0f ev/s, p99", r.LatencyRate), ms(r.LatencyP99Ms), ms(r.LatencyRawP99Ms), 0, "≤ 5 ms")
	row(fmt.Sprintf("  Redis CPU per event meanwhile (%.0f ev/s)", r.LatencyRate), fmt.Sprintf("%.1f µs", r.LatencyRedisUsPerEvent),
		fmt.Sprintf("%.1f µs", r.LatencyRawRedisUsPerEvent), 0, "")
	row("  Redis commands per event meanwhile", fmt.Sprintf("%.2f", r.LatencyRedisCommandsPerEvent),
		fmt.Sprintf("%.2f", r.LatencyRawRedisCommandsPerEvent), 0, "")
	step = "lateness"
	row("reminder fire lateness p50", ms(r.FireLatenessP50Ms), "", 0, "")
	row("reminder fire lateness p99", ms(r.FireLatenessP99Ms), "", 0, "≤ 1500 ms")
	row("reminders fired early", fmt.Sprintf("%d of %d", r.FireEarlyCount, r.FireCount), "", 0, "0")
	step = "schedule"
	row("reminder scheduling", perS(r.SchedulePerS, "reminders"), perS(r.ScheduleRawPerS, "enqueues"), r.ScheduleRatio, "≥ 0.8")
	step = "push"
	row("pushes through the worker (raw: the same messages)", perS(r.PushPerS, "pushes"), perS(r.PushRawPerS, "pushes"), r.PushRatio, "≥ 0.6")
	row("  against a bare title and body", "", perS(r.PushRawMinimalPerS, "pushes"), r.PushMinimalRatio, "")
	row("  Redis CPU and commands per push", fmt.Sprintf("%.1f µs, %.2f", r.PushRedisUsPerPush, r.PushRedisCommandsPerPush), "", 0, "")
	row("  CPU per push: worker and Redis (raw: the raw client), sandbox apart", fmt.Sprintf("%.1f µs", r.PushWorkerCPUUsPerPush+r.PushRedisUsPerPush),
		fmt.Sprintf("%.1f µs (sandbox %.1f µs)", r.PushRawCPUUsPerPush-r.PushSandboxCPUUsPerPush, r.PushSandboxCPUUsPerPush), r.PushCPURatio, "")
	step = "flush"
	row("flush, 100k rows (half updates)", perS(r.FlushRowsPerS, "rows"), perS(r.FlushRawRowsPerS, "rows")+" (1 table)", r.FlushRatio, "≥ 0.7")
	row("", "", perS(r.FlushRaw3TablesRowsPS, "rows")+" (3 tables)", r.FlushRatio3Tables, "")
	step = "effect"
	row(fmt.Sprintf("first reminders pushed, reacted to (open %.0f %%, read %.0f %% of pushes)", 100*r.EffectSimOpenRate, 100*r.EffectSimPushReadRate),
		strconv.FormatInt(r.EffectPushed, 10), "", 0, "")
	row("  opened (report)", fmt.Sprintf("%d (%.1f %%)", r.EffectOpened, 100*r.EffectOpenRate), "", 0, "")
	row("  converted by a read (report)", fmt.Sprintf("%d (%.1f %%)", r.EffectConverted, 100*r.EffectConversionRate), "", 0, "")
	step = "memory"
	row("Redis per open episode", fmt.Sprintf("%.0f B", r.RedisBytesPerEpisode), "", 0, "bounded")
	row("Redis per idle user", fmt.Sprintf("%.0f B", r.RedisBytesPerIdleUser), "", 0, "bounded")
	for _, name := range []string{"ingest", "worker", "flusher"} {
		if _, ok := r.PeakRSSMiB[name]; !ok {
			continue // the binaries did not run
		}
		step = ""
		row("peak RSS, "+name, fmt.Sprintf("%.1f MiB", r.PeakRSSMiB[name]), "", 0, "")
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%.0f s\n", r.Seconds)
}

func perS(v float64, unit string) string { return fmt.Sprintf("%.0f %s/s", v, unit) }

func ms(v float64) string { return fmt.Sprintf("%.2f ms", v) }

// WriteFile writes the figures as indented JSON (bench.json).
func (r *Result) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
