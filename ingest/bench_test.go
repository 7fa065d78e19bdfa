package ingest_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/bench"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// BenchmarkIngestVsRaw measures the ingest path in events/s and as a ratio
// to a raw consumer doing only XREADGROUP + XACK over the same entries on
// the same Redis, in the same run (package bench; make bench runs the same
// measurement).
func BenchmarkIngestVsRaw(b *testing.B) {
	for _, recipients := range []int{1, 10} {
		b.Run("recipients="+strconv.Itoa(recipients), func(b *testing.B) {
			const n = 20000
			var raw, nudge []float64
			for range b.N {
				r, err := bench.IngestRaw(context.Background(), redisClient(b), n, recipients)
				if err != nil {
					b.Fatal(err)
				}
				g, err := bench.IngestNudge(context.Background(), redisClient(b), n, recipients)
				if err != nil {
					b.Fatal(err)
				}
				raw, nudge = append(raw, r), append(nudge, g)
			}
			b.ReportMetric(slices.Max(nudge), "events/s")
			b.ReportMetric(slices.Max(raw), "raw-events/s")
			b.ReportMetric(slices.Max(nudge)/slices.Max(raw), "ratio")
		})
	}
}

// BenchmarkPublishToCounter measures publish → counter visible in Redis
// under 10,000 events/s of direct-chat traffic through an in-process
// consumer with the ingest binary's defaults and scheduler, against bare
// consumers over the same traffic, in the same run: the latency step of
// make bench without building binaries (package bench). Each iteration
// probes for NUDGE_BENCH_LATENCY_SECONDS (default 10) seconds a side.
func BenchmarkPublishToCounter(b *testing.B) {
	traffic := 10 * time.Second
	if v, err := strconv.Atoi(os.Getenv("NUDGE_BENCH_LATENCY_SECONDS")); err == nil && v > 0 {
		traffic = time.Duration(v) * time.Second
	}
	for range b.N {
		nudge, bare, err := bench.LatencyInProcess(context.Background(), redisClient(b), traffic)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("nudge %+v; bare %+v", nudge, bare)
		b.ReportMetric(nudge.P50Ms, "p50-ms")
		b.ReportMetric(nudge.P99Ms, "p99-ms")
		b.ReportMetric(bare.P99Ms, "raw-p99-ms")
		b.ReportMetric(nudge.RedisUsPerEvent, "redis-µs/event")
		b.ReportMetric(bare.RedisUsPerEvent, "raw-redis-µs/event")
		b.ReportMetric(nudge.RedisCommandsPerEvent, "redis-commands/event")
		b.ReportMetric(bare.RedisCommandsPerEvent, "raw-redis-commands/event")
	}
}

func redisClient(b *testing.B) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(), PoolSize: 32})
	b.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func benchEvents(n, recipients int) []*event.Event {
	evs := make([]*event.Event, n)
	rcpt := make([]string, recipients)
	for i := range evs {
		for r := range rcpt {
			rcpt[r] = "user-" + strconv.Itoa((i*7+r)%5000)
		}
		evs[i] = &event.Event{V: 1, Type: event.TypeMessage, ID: "b" + strconv.Itoa(i), TS: testTS,
			Conversation: "conv-" + strconv.Itoa(i%2000), Message: "m" + strconv.Itoa(i), Sender: "sender-" + strconv.Itoa(i%300),
			Recipients: append([]string(nil), rcpt...), Preview: "see you at the standup in five minutes"}
	}
	return evs
}

func benchSetup(b *testing.B, n, recipients int) (*redis.Client, keys.Keyspace, func()) {
	b.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(), PoolSize: 32})
	prefix := redistest.RandomPrefix()
	ks := keys.New(prefix, 8)
	p := producer.New(rdb, producer.Config{Keyspace: ks})
	evs := benchEvents(n, recipients)
	for i := 0; i < len(evs); i += 1000 {
		if _, err := p.PublishBatch(context.Background(), evs[i:min(i+1000, len(evs))]); err != nil {
			b.Fatal(err)
		}
	}
	return rdb, ks, func() {
		redistest.DeletePrefix(b, rdb, prefix)
		_ = rdb.Close()
	}
}
