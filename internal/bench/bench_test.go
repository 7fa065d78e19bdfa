package bench

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
)

// TestRunSmoke runs every measurement at a tiny size through the real
// code paths (binaries, sandbox, Redis, PostgreSQL) and checks that each
// figure was measured and is plausible; the figures themselves mean
// nothing at this size and under -race.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	res, err := Run(context.Background(), Config{RedisAddr: redistest.Addr(), AdminURL: pgtest.AdminURL(), Root: "../..",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), smoke: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	// The fields the benchmark issue asks bench.json for, all measured.
	for _, f := range []string{"ingest_events_per_s", "ingest_raw_events_per_s", "ingest_ratio", "group10_events_per_s",
		"latency_p50_ms", "latency_p99_ms", "latency_redis_us_per_event", "latency_raw_redis_us_per_event",
		"latency_redis_commands_per_event", "latency_raw_redis_commands_per_event", "fire_lateness_p50_ms", "fire_lateness_p99_ms", "schedule_ratio",
		"push_per_s", "push_ratio", "push_raw_minimal_per_s", "push_minimal_ratio", "push_redis_us_per_push", "push_redis_commands_per_push", "push_worker_cpu_us_per_push", "push_sandbox_cpu_us_per_push", "push_raw_cpu_us_per_push", "flush_rows_per_s", "flush_ratio", "redis_bytes_per_episode",
		"ingest_redis_us_per_event", "ingest_redis_commands_per_event", "burst_members", "burst_apply_ms", "burst_max_script_ms",
		"burst_pushes", "burst_lateness_p50_ms", "burst_lateness_p99_ms", "burst_publish_lateness_p99_ms", "burst_pushes_per_s",
		"effect_pushed", "effect_opened", "effect_converted", "effect_open_rate", "effect_conversion_rate"} {
		v, ok := fields[f].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", f, fields[f])
		}
	}
	// Nudge's commands per event include the bare consumer's kinds (read,
	// count, acknowledge) and its own state: more of them at both rates.
	if res.IngestRedisCommandsPerEvent <= res.IngestRawRedisCommandsPerEvent ||
		res.LatencyRedisCommandsPerEvent <= res.LatencyRawRedisCommandsPerEvent {
		t.Errorf("Redis commands per event: ingest %.2f (raw %.2f), under traffic %.2f (bare %.2f): want Nudge's above the raw ones",
			res.IngestRedisCommandsPerEvent, res.IngestRawRedisCommandsPerEvent, res.LatencyRedisCommandsPerEvent, res.LatencyRawRedisCommandsPerEvent)
	}
	if _, ok := fields["fire_early_count"].(float64); !ok {
		t.Errorf("fire_early_count missing")
	}
	// The raw client's CPU is the difference of two measured figures: at
	// this size it may come out under the sandbox's, and the ratio with it.
	if _, ok := fields["push_cpu_ratio"].(float64); !ok {
		t.Errorf("push_cpu_ratio missing")
	}
	if res.FireEarlyCount != 0 {
		t.Errorf("%d of %d reminders fired before their due time", res.FireEarlyCount, res.FireCount)
	}
	if res.BurstEarly != 0 || res.BurstPushes != res.BurstMembers {
		t.Errorf("burst: %d pushes (%d early) to %d members, want one each, none early", res.BurstPushes, res.BurstEarly, res.BurstMembers)
	}
	// Each reminder is due after publish time + the delay, as it counts from
	// when ingest applied the message: its lateness is the smaller.
	if res.BurstLatenessP99Ms > res.BurstPublishLatenessP99Ms {
		t.Errorf("burst lateness p99 %.0f ms after the due times, %.0f ms after publish time + delay: want the first at most the second",
			res.BurstLatenessP99Ms, res.BurstPublishLatenessP99Ms)
	}
	if res.EffectOpenRate > 1 || res.EffectConversionRate > 1 || res.EffectOpened > res.EffectPushed || res.EffectConverted > res.EffectPushed {
		t.Errorf("effectiveness: %d pushed, %d opened (%.3f), %d converted (%.3f): a part over the whole",
			res.EffectPushed, res.EffectOpened, res.EffectOpenRate, res.EffectConverted, res.EffectConversionRate)
	}
	if res.FireCount == 0 {
		t.Errorf("no reminder fired")
	}
	if res.Machine == "" {
		t.Error("no machine description")
	}
	if res.RedisBytesPerEpisode < 50 || res.RedisBytesPerEpisode > 2000 {
		t.Errorf("%.0f Redis bytes per open episode: implausible", res.RedisBytesPerEpisode)
	}
	for _, name := range []string{"ingest", "worker", "flusher"} {
		if res.PeakRSSMiB[name] <= 0 {
			t.Errorf("no peak RSS of %s", name)
		}
	}
	rdb, _ := redistest.New(t)
	// Nothing of the run is left in Redis: its keys, and its asynq queues'.
	for _, prefix := range []string{"bench-", "asynq:{bench-"} {
		if left, err := redistest.Keys(context.Background(), rdb, prefix); err != nil || len(left) > 0 {
			t.Errorf("keys under %s left behind: %d %v", prefix, len(left), err)
		}
	}
}

// TestProcessCPU: the ways of reading a process's CPU time (getrusage for
// the bench's own; its threads' schedstat, or /proc/<pid>/stat, for a
// binary's) agree on this process after it has used some.
func TestProcessCPU(t *testing.T) {
	start, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for used := time.Duration(0); used < 200*time.Millisecond; {
		for i := range 1_000_000 {
			x += i
		}
		now, err := processCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		used = now - start
	}
	self, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	stat, err := statCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sched, err := schedCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Ticks of 10 ms, and the reads a moment apart.
	if d := (self - stat).Abs(); d > 50*time.Millisecond {
		t.Errorf("getrusage %v, /proc/self/stat %v (x %d)", self, stat, x)
	}
	if d := (self - sched).Abs(); d > 50*time.Millisecond {
		t.Errorf("getrusage %v, /proc/self/task/*/schedstat %v", self, sched)
	}
	if _, err := statCPU(-1); err == nil {
		t.Error("statCPU(-1): want an error")
	}
	if _, err := schedCPU(-1); err == nil {
		t.Error("schedCPU(-1): want an error")
	}
}

func TestParseSteps(t *testing.T) {
	for _, all := range []string{"", "all"} {
		if got, err := ParseSteps(all); err != nil || got != nil {
			t.Errorf("ParseSteps(%q) = %v, %v; want every step", all, got, err)
		}
	}
	got, err := ParseSteps("push, latency")
	if err != nil || !slices.Equal(got, []string{"push", "latency"}) {
		t.Errorf("ParseSteps(push, latency) = %v, %v", got, err)
	}
	c := Config{Steps: got}
	if !c.runs("push") || c.runs("burst") || !(Config{}).runs("burst") {
		t.Errorf("runs: push %v, burst %v with -steps push,latency; burst %v with every step", c.runs("push"), c.runs("burst"), Config{}.runs("burst"))
	}
	if _, err := ParseSteps("push,all"); err == nil {
		t.Error(`ParseSteps("push,all"): want an error`)
	}

	// The table of a run of some steps shows their rows, not the others'
	// zeros; a run of every step shows every row.
	res := &Result{Steps: []string{"push"}, PushPerS: 4000, PushRawPerS: 8000, PushRatio: 0.5, PeakRSSMiB: map[string]float64{"worker": 90}}
	var b strings.Builder
	res.WriteTable(&b)
	for _, want := range []string{"pushes through the worker", "4000 pushes/s", "peak RSS, worker"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("-steps push: no %q in\n%s", want, b.String())
		}
	}
	for _, not := range []string{"ingest, 1-recipient", "publish → counter", "flush", "peak RSS, ingest"} {
		if strings.Contains(b.String(), not) {
			t.Errorf("-steps push: %q in\n%s", not, b.String())
		}
	}
	res.Steps = nil
	b.Reset()
	res.WriteTable(&b)
	for _, want := range []string{"ingest, 1-recipient", "publish → counter", "flush", "pushes through the worker"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("every step: no %q in\n%s", want, b.String())
		}
	}
}
