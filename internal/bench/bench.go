// Package bench measures Nudge on the machine it runs on, each figure next
// to the raw limit of the same Redis or PostgreSQL measured in the same
// run: ingest against a bare XREADGROUP + XACK consumer, the publish →
// counter latency against a bare consumer doing XREADGROUP + HINCRBY +
// XACK, reminder scheduling against bare asynq Enqueue, pushes through
// the worker against the raw FCM client, a flush against a bare COPY +
// INSERT ... ON CONFLICT. It also measures reminder fire lateness, Redis
// bytes per open episode and per idle user, and the peak RSS of each
// binary under load.
//
// cmd/bench (make bench) runs it and writes bench.json; BENCHMARKS.md
// holds the figures of a real run and what limits each one.
package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/keys"
)

// Config configures a run. The zero value of each field means its default.
type Config struct {
	// RedisAddr is the Redis to measure. Default 127.0.0.1:6379. The run
	// writes under a prefix of its own and deletes it afterwards.
	RedisAddr string
	// AdminURL is the PostgreSQL server; the run creates a database of its
	// own on it and drops it afterwards. Default
	// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
	AdminURL string
	// Root is the repository root, where the binaries are built from.
	// Default ".".
	Root string
	// Quick shrinks every measurement to finish in under two minutes.
	Quick bool
	// Steps names the measurements to run (Steps); none: all of them. The
	// figures of the others stay 0.
	Steps []string
	// Logger receives progress. Default: discard.
	Logger *slog.Logger

	// smoke shrinks every measurement to a few seconds, for the tests:
	// the figures mean nothing, the code paths are the real ones.
	smoke bool
}

func (c Config) withDefaults() Config {
	c.RedisAddr = cmp.Or(c.RedisAddr, "127.0.0.1:6379")
	c.AdminURL = cmp.Or(c.AdminURL, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	c.Root = cmp.Or(c.Root, ".")
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// pipelineSteps are the measurements through the binaries (measurePipeline).
var pipelineSteps = []string{"burst", "push", "lateness", "latency", "effect"}

// Steps are the measurements of a run, in the order they run: the bare
// ones, then those through the binaries.
var Steps = append([]string{"ingest", "schedule", "flush", "memory"}, pipelineSteps...)

// ParseSteps reads a comma-separated list of Steps ("" or "all": every
// one).
func ParseSteps(list string) ([]string, error) {
	if list == "" || list == "all" {
		return nil, nil
	}
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(Steps, s) {
			return nil, fmt.Errorf("unknown step %q: want some of %s, comma-separated, or all", s, strings.Join(Steps, ", "))
		}
		out = append(out, s)
	}
	return out, nil
}

// runs reports whether the run measures step.
func (c Config) runs(step string) bool { return len(c.Steps) == 0 || slices.Contains(c.Steps, step) }

// size picks the full or the quick size of a measurement.
func (c Config) size(full, quick int) int {
	if c.smoke {
		return max(1, quick/50)
	}
	if c.Quick {
		return quick
	}
	return full
}

// Result holds the figures of a run. Rates are per second, times in
// milliseconds, ratios Nudge's figure over the raw one (higher is better,
// 1 is the raw limit).
type Result struct {
	// Ingest of message events with one recipient, and the raw consumer.
	IngestEventsPerS    float64 `json:"ingest_events_per_s"`
	IngestRawEventsPerS float64 `json:"ingest_raw_events_per_s"`
	IngestRatio         float64 `json:"ingest_ratio"`
	// Redis time per one-recipient event ingested: the CPU of Redis's main
	// thread (INFO cpu), of it the apply scripts' (INFO commandstats,
	// evalsha), and the main thread's CPU per event of the raw consumer.
	IngestRedisUsPerEvent    float64 `json:"ingest_redis_us_per_event"`
	IngestScriptUsPerEvent   float64 `json:"ingest_script_us_per_event"`
	IngestRawRedisUsPerEvent float64 `json:"ingest_raw_redis_us_per_event"`
	// Redis commands per one-recipient event ingested (INFO stats
	// total_commands_processed, a script's own commands included), and the
	// raw consumer's: the same on a quick machine and a slow one.
	IngestRedisCommandsPerEvent    float64 `json:"ingest_redis_commands_per_event"`
	IngestRawRedisCommandsPerEvent float64 `json:"ingest_raw_redis_commands_per_event"`
	// Ingest of group messages with ten recipients.
	Group10EventsPerS    float64 `json:"group10_events_per_s"`
	Group10RawEventsPerS float64 `json:"group10_raw_events_per_s"`
	Group10Ratio         float64 `json:"group10_ratio"`

	// Publish → counter visible in Redis, at LatencyRate events/s of
	// load-generator traffic through the ingest binary; the bare consumer
	// over the same traffic.
	LatencyRate     float64 `json:"latency_rate_events_per_s"`
	LatencyP50Ms    float64 `json:"latency_p50_ms"`
	LatencyP99Ms    float64 `json:"latency_p99_ms"`
	LatencyRawP50Ms float64 `json:"latency_raw_p50_ms"`
	LatencyRawP99Ms float64 `json:"latency_raw_p99_ms"`
	// The CPU of Redis's main thread per traffic event while the probes
	// ran (the pipeline, or the bare consumer, the traffic and the probes
	// together): batches at this rate hold a few events each.
	LatencyRedisUsPerEvent    float64 `json:"latency_redis_us_per_event"`
	LatencyRawRedisUsPerEvent float64 `json:"latency_raw_redis_us_per_event"`
	// Redis commands per traffic event meanwhile, likewise. They depend on
	// how many events a batch holds, and so on the machine's speed, less
	// than the CPU does.
	LatencyRedisCommandsPerEvent    float64 `json:"latency_redis_commands_per_event"`
	LatencyRawRedisCommandsPerEvent float64 `json:"latency_raw_redis_commands_per_event"`

	// One message to a group of BurstMembers through the ingest binary:
	// XADD → every member's unread state applied, and the longest apply
	// script meanwhile (at most the SLOWLOG threshold of 0.5 ms when none
	// was logged).
	BurstMembers     int     `json:"burst_members"`
	BurstApplyMs     float64 `json:"burst_apply_ms"`
	BurstMaxScriptMs float64 `json:"burst_max_script_ms"`
	// Then one message to BurstMembers users with a device each (a third
	// APNs) whose first reminders fall due together: how late the pushes
	// arrived after each reminder's own due time (read from its task), how
	// many came before it, and their rate. BurstPublishLatenessP99Ms is
	// the p99 after publish time + the delay instead, an upper bound (the
	// due time counts from when ingest applied the message) and the figure
	// runs before 2026-12-06 reported as the lateness.
	BurstPushes               int     `json:"burst_pushes"`
	BurstEarly                int     `json:"burst_early"`
	BurstLatenessP50Ms        float64 `json:"burst_lateness_p50_ms"`
	BurstLatenessP99Ms        float64 `json:"burst_lateness_p99_ms"`
	BurstPublishLatenessP99Ms float64 `json:"burst_publish_lateness_p99_ms"`
	BurstPushesPerS           float64 `json:"burst_pushes_per_s"`

	// Reminder effectiveness under load-generator traffic whose users open
	// EffectSimOpenRate of the pushes their devices get and read after
	// EffectSimPushReadRate of them: the first stage's reminders pushed,
	// opened and converted, and the rates the report gives (parts of the
	// pushed). A user's reminder reaches one to three devices, each
	// reacted to alone, and regular reads after a push convert too, so
	// the rates exceed the simulated ones.
	EffectPushed          int64   `json:"effect_pushed"`
	EffectOpened          int64   `json:"effect_opened"`
	EffectConverted       int64   `json:"effect_converted"`
	EffectOpenRate        float64 `json:"effect_open_rate"`
	EffectConversionRate  float64 `json:"effect_conversion_rate"`
	EffectSimOpenRate     float64 `json:"effect_simulated_open_rate"`
	EffectSimPushReadRate float64 `json:"effect_simulated_push_read_rate"`

	// Reminder fire lateness after the due time, default settings.
	FireLatenessP50Ms float64 `json:"fire_lateness_p50_ms"`
	FireLatenessP99Ms float64 `json:"fire_lateness_p99_ms"`
	FireEarlyCount    int     `json:"fire_early_count"`
	FireCount         int     `json:"fire_count"`

	// First reminders scheduled when every event opens an episode, and
	// bare asynq Enqueue of as many tasks with the same concurrency.
	SchedulePerS    float64 `json:"schedule_per_s"`
	ScheduleRawPerS float64 `json:"schedule_raw_per_s"`
	ScheduleRatio   float64 `json:"schedule_ratio"`

	// Pushes through the worker binary, and the raw FCM client sending the
	// same messages again; and the raw client sending a bare title and
	// body, the smallest message.
	PushPerS           float64 `json:"push_per_s"`
	PushRawPerS        float64 `json:"push_raw_per_s"`
	PushRatio          float64 `json:"push_ratio"`
	PushRawMinimalPerS float64 `json:"push_raw_minimal_per_s"`
	PushMinimalRatio   float64 `json:"push_minimal_ratio"`
	// Redis's main-thread CPU and commands (a script's own included) per
	// push, from when the reminders were queued until their tasks ended.
	PushRedisUsPerPush       float64 `json:"push_redis_us_per_push"`
	PushRedisCommandsPerPush float64 `json:"push_redis_commands_per_push"`
	// CPU of each process per push (user and system, /proc): the worker
	// binary over the same window as Redis's; the bench's own process
	// until the last push, which is the push sandbox answering; and the
	// bench's process while the raw client sent the same messages, the raw
	// client and the sandbox. PushCPURatio is the raw client's share of that
	// (the sandbox's taken off) over the worker's and Redis's: the push ratio
	// with the provider off the machine, as in production.
	PushWorkerCPUUsPerPush  float64 `json:"push_worker_cpu_us_per_push"`
	PushSandboxCPUUsPerPush float64 `json:"push_sandbox_cpu_us_per_push"`
	PushRawCPUUsPerPush     float64 `json:"push_raw_cpu_us_per_push"`
	PushCPURatio            float64 `json:"push_cpu_ratio"`

	// Counter rows flushed (100k distinct rows, half already in Postgres),
	// and the bare COPY + upsert of the same rows into one table and into
	// the three tables a flush writes.
	FlushRowsPerS         float64 `json:"flush_rows_per_s"`
	FlushRawRowsPerS      float64 `json:"flush_raw_rows_per_s"`
	FlushRatio            float64 `json:"flush_ratio"`
	FlushRaw3TablesRowsPS float64 `json:"flush_raw_3tables_rows_per_s"`
	FlushRatio3Tables     float64 `json:"flush_ratio_3tables"`

	// Redis memory (MEMORY USAGE of the keys) per open unread episode,
	// and per idle user (online, device registered, everything read).
	RedisBytesPerEpisode  float64 `json:"redis_bytes_per_episode"`
	RedisBytesPerIdleUser float64 `json:"redis_bytes_per_idle_user"`

	// Peak resident set size of each binary over the pipeline run, MiB.
	PeakRSSMiB map[string]float64 `json:"peak_rss_mib"`

	Machine string `json:"machine"`
	Quick   bool   `json:"quick"`
	// Steps are the measurements run, when not all of them (-steps).
	Steps   []string `json:"steps,omitempty"`
	Seconds float64  `json:"seconds"`
}

// Run measures everything, one measurement after the other so that they
// do not disturb each other.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	start := time.Now()
	res := &Result{Quick: cfg.Quick, Steps: cfg.Steps}
	opt, err := redis.ParseURL("redis://" + cfg.RedisAddr)
	if err != nil {
		return nil, err
	}
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", cfg.RedisAddr, err)
	}
	dbName := fmt.Sprintf("nudge_bench_%d", time.Now().UnixNano())
	dbURL, err := datastore.CreateDatabase(ctx, cfg.AdminURL, dbName)
	if err != nil {
		return nil, err
	}
	defer func() { _ = datastore.DropDatabase(context.Background(), cfg.AdminURL, dbName) }()
	if res.Machine, err = machine(ctx, rdb, dbURL); err != nil {
		return nil, err
	}
	cfg.Logger.Info("machine", "is", res.Machine)

	steps := []struct {
		name string
		run  func() error
	}{
		{"ingest", func() error { return measureIngest(ctx, cfg, rdb, res) }},
		{"schedule", func() error { return measureSchedule(ctx, cfg, rdb, res) }},
		{"flush", func() error { return measureFlush(ctx, cfg, rdb, dbURL, res) }},
		{"memory", func() error { return measureMemory(ctx, cfg, rdb, res) }},
		{"pipeline", func() error { return measurePipeline(ctx, cfg, rdb, dbURL, res) }},
	}
	for _, s := range steps {
		if s.name == "pipeline" && !slices.ContainsFunc(pipelineSteps, cfg.runs) || s.name != "pipeline" && !cfg.runs(s.name) {
			continue
		}
		t := time.Now()
		cfg.Logger.Info("measuring", "what", s.name)
		if err := s.run(); err != nil {
			return res, fmt.Errorf("%s: %w", s.name, err)
		}
		cfg.Logger.Info("measured", "what", s.name, "took", time.Since(t).Round(time.Millisecond))
	}
	res.Seconds = math.Round(time.Since(start).Seconds())
	return res, nil
}

// machine describes the machine and the servers: cores, CPU model, Redis
// and PostgreSQL versions.
func machine(ctx context.Context, rdb *redis.Client, dbURL string) (string, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	redisVersion := infoField(info, "redis_version")
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var pgVersion string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err != nil {
		return "", err
	}
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if v := infoField(strings.ReplaceAll(string(b), "\t", ""), "model name"); v != "" {
			cpu = v
		}
	}
	return fmt.Sprintf("%d cores (%s), %s/%s, Redis %s, PostgreSQL %s, %s",
		runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH, redisVersion, pgVersion, runtime.Version()), nil
}

// infoField returns the value of "name:value" in a Redis INFO reply or
// /proc/cpuinfo (first match, spaces around the colon trimmed).
func infoField(text, name string) string {
	for line := range strings.Lines(text) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// percentile returns the p-th percentile (0 to 100) of sorted durations,
// in milliseconds, nearest rank.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return round(float64(sorted[i].Microseconds())/1000, 2)
}

func sortedCopy(ds []time.Duration) []time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s
}

// round rounds x to n decimals.
func round(x float64, n int) float64 {
	p := math.Pow(10, float64(n))
	return math.Round(x*p) / p
}

// ratio is a/b rounded to two decimals, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round(a/b, 2)
}

// median returns the median of xs (the upper one of an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// deletePrefix deletes every key that starts with prefix.
func deletePrefix(ctx context.Context, rdb *redis.Client, prefix string) {
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
}

// deleteQueue deletes every key of an asynq queue and the queue from
// asynq's list of queues: asynq's own DeleteQueue, even forced, leaves
// some task hashes and the queue's totals behind.
func deleteQueue(ctx context.Context, rdb *redis.Client, queue string) {
	deletePrefix(ctx, rdb, keys.AsynqQueue(queue))
	rdb.SRem(ctx, keys.AsynqQueues, queue)
}

// newPrefix returns a key prefix of its own for a measurement.
func newPrefix(what string) string {
	return fmt.Sprintf("bench-%s-%d", what, time.Now().UnixNano()%1_000_000_000)
}
