package ingest

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// applyBench is one shard of a fresh keyspace on the test Redis, owned by
// a Consumer that is not running: the benchmark drives its batch steps
// itself.
type applyBench struct {
	rdb   *redis.Client
	ks    keys.Keyspace
	c     *Consumer
	pub   *producer.Producer
	convs []string // conversations of shard 0
	seq   int
}

const benchShard = 0

func newApplyBench(b *testing.B) *applyBench {
	b.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	prefix := redistest.RandomPrefix()
	ks := keys.New(prefix, 8)
	b.Cleanup(func() {
		redistest.DeletePrefix(b, rdb, prefix)
		_ = rdb.Close()
	})
	c, err := New(rdb, Config{Keyspace: ks, Consumer: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	if err := rdb.Set(ctx, ks.Lease(benchShard), "bench", 0).Err(); err != nil {
		b.Fatal(err)
	}
	ab := &applyBench{rdb: rdb, ks: ks, c: c, pub: producer.New(rdb, producer.Config{Keyspace: ks})}
	for i := 0; len(ab.convs) < 64; i++ {
		if conv := "conv-" + strconv.Itoa(i); ks.Shard(conv) == benchShard {
			ab.convs = append(ab.convs, conv)
		}
	}
	return ab
}

// events returns n new messages to shard 0 with recipients recipients
// each, from a pool of 5000 users, with unique producer ids.
func (ab *applyBench) events(n, recipients int) []*event.Event {
	evs := make([]*event.Event, n)
	for i := range evs {
		ab.seq++
		k := ab.seq
		rcpt := make([]string, recipients)
		for r := range rcpt {
			rcpt[r] = "user-" + strconv.Itoa((k*7+r*13)%5000)
		}
		var mentions []string
		if recipients > 1 {
			mentions = rcpt[:2]
		}
		evs[i] = &event.Event{V: 1, Type: event.TypeMessage, ID: "b" + strconv.Itoa(k), TS: 1767225600000,
			Conversation: ab.convs[k%len(ab.convs)], Message: "m" + strconv.Itoa(k), Sender: "sender-" + strconv.Itoa(k%300),
			Recipients: rcpt, Mentions: mentions, Preview: "see you at the standup in five minutes"}
	}
	return evs
}

// read publishes evs and reads them back through the consumer group, as a
// shard loop does: they are pending for "bench" when it returns.
func (ab *applyBench) read(b *testing.B, evs []*event.Event) []redis.XMessage {
	b.Helper()
	ctx := context.Background()
	if _, err := ab.pub.PublishBatch(ctx, evs); err != nil {
		b.Fatal(err)
	}
	msgs, err := ab.c.read(ctx, benchShard)
	if err != nil || len(msgs) != len(evs) {
		b.Fatalf("read %d entries (%v), want %d", len(msgs), err, len(evs))
	}
	return msgs
}

// trim drops the applied entries, so the stream stays small.
func (ab *applyBench) trim(b *testing.B) {
	b.Helper()
	if err := ab.rdb.XTrimMaxLen(context.Background(), ab.ks.Stream(benchShard), 0).Err(); err != nil {
		b.Fatal(err)
	}
}

// mallocs counts heap allocations of the timed parts of a benchmark, for
// a per-event figure (allocs/op covers a whole batch).
type mallocs struct {
	ms    runtime.MemStats
	start uint64
	total uint64
}

func (m *mallocs) begin() {
	runtime.ReadMemStats(&m.ms)
	m.start = m.ms.Mallocs
}

func (m *mallocs) end() {
	runtime.ReadMemStats(&m.ms)
	m.total += m.ms.Mallocs - m.start
}

func reportPerEvent(b *testing.B, m *mallocs, events int) {
	n := float64(b.N * events)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/event")
	b.ReportMetric(float64(m.total)/n, "allocs/event")
}

// BenchmarkApplyBatch measures the per-batch steps of a shard loop after
// XREADGROUP has returned a batch of 256 message entries:
//
//   - decode: the entries to items (event.Decode and the shard check of
//     every entry); Go only, no Redis.
//   - apply: the items to the apply.lua call (keys and arguments) and the
//     script itself on the real Redis, which applies and acknowledges every
//     entry.
//   - batch: both, the whole step (Consumer.process) as a shard loop runs
//     it, without reminder hooks or a registry.
//   - redis: the read script and the apply script of each batch, reporting
//     what each costs Redis per event (evalsha usec of INFO commandstats
//     around each call: run it against a Redis nothing else uses, as
//     NUDGE_TEST_REDIS_ADDR of a private redis-server).
//
// ns/event and allocs/event divide by the 256 entries of a batch. Redis
// time is in ns/op of apply and batch; allocations are Go's only.
func BenchmarkApplyBatch(b *testing.B) {
	const batch = 256
	for _, recipients := range []int{1, 10} {
		name := "recipients=" + strconv.Itoa(recipients)
		b.Run(name+"/decode", func(b *testing.B) {
			ab := newApplyBench(b)
			msgs := ab.read(b, ab.events(batch, recipients))
			var m mallocs
			b.ReportAllocs()
			b.ResetTimer()
			m.begin()
			for i := 0; i < b.N; i++ {
				items := ab.c.decode(benchShard, msgs, nil)
				if items[0].ev == nil {
					b.Fatalf("entry not decoded: %s %s", items[0].reason, items[0].detail)
				}
			}
			m.end()
			reportPerEvent(b, &m, batch)
		})
		b.Run(name+"/apply", func(b *testing.B) {
			ab := newApplyBench(b)
			ctx := context.Background()
			var m mallocs
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				items := ab.c.decode(benchShard, ab.read(b, ab.events(batch, recipients)), nil)
				m.begin()
				b.StartTimer()
				res, err := ab.c.apply(ctx, benchShard, items)
				b.StopTimer()
				m.end()
				if err != nil || res.Applied != batch {
					b.Fatalf("applied %d (%v), want %d", res.Applied, err, batch)
				}
				ab.trim(b)
				b.StartTimer()
			}
			reportPerEvent(b, &m, batch)
		})
		b.Run(name+"/batch", func(b *testing.B) {
			ab := newApplyBench(b)
			ctx := context.Background()
			var m mallocs
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				msgs := ab.read(b, ab.events(batch, recipients))
				applied := ab.c.stats.Applied.Load()
				m.begin()
				b.StartTimer()
				err := ab.c.process(ctx, benchShard, msgs, nil)
				b.StopTimer()
				m.end()
				if got := ab.c.stats.Applied.Load() - applied; err != nil || got != batch {
					b.Fatalf("applied %d (%v), want %d", got, err, batch)
				}
				ab.trim(b)
				b.StartTimer()
			}
			reportPerEvent(b, &m, batch)
		})
		b.Run(name+"/redis", func(b *testing.B) {
			read, apply := scriptCosts(b, batch, recipients)
			b.ReportMetric(read/batch, "read-script-us/event")
			b.ReportMetric(apply/batch, "apply-script-us/event")
		})
	}
}

// BenchmarkScriptCallByBatchSize is BenchmarkApplyBatch's redis step for
// batches of 1, 4, 16 and 256 one-recipient messages: what a read script
// call and an apply script call cost Redis, as batches shrink at moderate
// rates (a shard loop that keeps up applies what arrived during its last
// batch). Run it against a private redis-server, as the redis step.
func BenchmarkScriptCallByBatchSize(b *testing.B) {
	for _, batch := range []int{1, 4, 16, 256} {
		b.Run("events="+strconv.Itoa(batch), func(b *testing.B) {
			read, apply := scriptCosts(b, batch, 1)
			b.ReportMetric(read, "read-script-us/call")
			b.ReportMetric(apply, "apply-script-us/call")
			b.ReportMetric(apply/float64(batch), "apply-script-us/event")
		})
	}
}

// scriptCosts reads and applies b.N batches of batch new messages with
// recipients recipients each, as a shard loop does, and returns the
// microseconds Redis spent in the read script and in the apply script of
// a batch, on average (evalsha usec of INFO commandstats around each call).
func scriptCosts(b *testing.B, batch, recipients int) (read, apply float64) {
	ab := newApplyBench(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if _, err := ab.pub.PublishBatch(ctx, ab.events(batch, recipients)); err != nil {
			b.Fatal(err)
		}
		t0 := scriptUsec(b, ab.rdb)
		msgs, err := ab.c.read(ctx, benchShard)
		if err != nil || len(msgs) != batch {
			b.Fatalf("read %d entries (%v), want %d", len(msgs), err, batch)
		}
		t1 := scriptUsec(b, ab.rdb)
		items := ab.c.decode(benchShard, msgs, nil)
		t2 := scriptUsec(b, ab.rdb)
		if res, err := ab.c.apply(ctx, benchShard, items); err != nil || res.Applied != batch {
			b.Fatalf("applied %d (%v), want %d", res.Applied, err, batch)
		}
		t3 := scriptUsec(b, ab.rdb)
		read, apply = read+t1-t0, apply+t3-t2
		ab.trim(b)
	}
	return read / float64(b.N), apply / float64(b.N)
}

// scriptUsec returns the microseconds Redis has spent in scripts
// (evalsha) since its stats were last reset.
func scriptUsec(b *testing.B, rdb *redis.Client) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:"); ok {
			_, v, _ := strings.Cut(rest, "usec=")
			v, _, _ = strings.Cut(v, ",")
			us, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("commandstats: %q: %v", line, err)
			}
			return us
		}
	}
	return 0
}

// BenchmarkApplyBadBatch is the batch step of BenchmarkApplyBatch
// (Consumer.process) on batches of 256 entries of which every tenth is
// bad, to show what bad input costs per entry next to good traffic
// (1-recipient messages):
//
//   - good: no bad entries, for reference;
//   - small: small bad entries of several reasons (truncated JSON, unknown
//     type, invalid UTF-8, duplicate key, missing field, an entry without
//     an "event" field);
//   - 60KB: events under the 64 KiB limit with a 60 KB preview
//     (field_too_large): the decoder parses them whole before rejecting;
//   - 1MB: 1 MB events (too_large), which the dead letter truncates to
//     64 KiB.
//
// ns/event and allocs/event divide by the 256 entries, good and bad.
func BenchmarkApplyBadBatch(b *testing.B) {
	const batch, bad = 256, 256 / 10
	for _, tt := range []struct {
		name    string
		entries [][]any // the bad entries' fields, used in turn
	}{
		{"good", nil},
		{"small", [][]any{
			{EventField, `{"v":1,"type":"message.sent","id":"x","ts":1767225600000,"conversation":"c1","mess`},
			{EventField, `{"v":1,"type":"message.edited","id":"x","ts":1767225600000,"user":"u"}`},
			{EventField, "{\"v\":1,\"type\":\"presence\",\"id\":\"x\xff\",\"ts\":1767225600000,\"user\":\"u\",\"status\":\"online\"}"},
			{EventField, `{"v":1,"type":"presence","id":"x","ts":1767225600000,"user":"u","user":"w","status":"online"}`},
			{EventField, `{"v":1,"type":"message.sent","id":"x","ts":1767225600000,"conversation":"c1","message":"m1","sender":"alice"}`},
			{"foo", "bar"},
		}},
		{"60KB", [][]any{{EventField, `{"v":1,"type":"message.sent","id":"x","ts":1767225600000,"conversation":"c1","message":"m1",` +
			`"sender":"alice","recipients":["bob"],"preview":"` + strings.Repeat("x", 60<<10) + `"}`}}},
		{"1MB", [][]any{{EventField, `{"v":1,"type":"message.sent","id":"x","ts":1767225600000,"conversation":"c1","message":"m1",` +
			`"sender":"alice","recipients":["bob"],"preview":"` + strings.Repeat("x", 1<<20) + `"}`}}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			ab := newApplyBench(b)
			ctx := context.Background()
			nbad := 0
			if tt.entries != nil {
				nbad = bad
			}
			var m mallocs
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if _, err := ab.pub.PublishBatch(ctx, ab.events(batch-nbad, 1)); err != nil {
					b.Fatal(err)
				}
				for j := 0; j < nbad; j++ {
					err := ab.rdb.XAdd(ctx, &redis.XAddArgs{Stream: ab.ks.Stream(benchShard), Values: tt.entries[j%len(tt.entries)]}).Err()
					if err != nil {
						b.Fatal(err)
					}
				}
				msgs, err := ab.c.read(ctx, benchShard)
				if err != nil || len(msgs) != batch {
					b.Fatalf("read %d entries (%v), want %d", len(msgs), err, batch)
				}
				applied, dead := ab.c.stats.Applied.Load(), ab.c.stats.DeadLettered.Load()
				m.begin()
				b.StartTimer()
				err = ab.c.process(ctx, benchShard, msgs, nil)
				b.StopTimer()
				m.end()
				if a, d := ab.c.stats.Applied.Load()-applied, ab.c.stats.DeadLettered.Load()-dead; err != nil || a != int64(batch-nbad) || d != int64(nbad) {
					b.Fatalf("applied %d, dead-lettered %d (%v), want %d and %d", a, d, err, batch-nbad, nbad)
				}
				ab.trim(b)
				if err := ab.rdb.XTrimMaxLen(ctx, ab.ks.DeadLetter(benchShard), 0).Err(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			reportPerEvent(b, &m, batch)
		})
	}
}
