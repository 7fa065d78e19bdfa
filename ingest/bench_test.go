package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// BenchmarkIngestVsRaw measures the ingest path in events/s and as a ratio
// to a raw consumer doing only XREADGROUP + XACK over the same entries on
// the same Redis, in the same run. Both read every shard with one loop per
// shard and batches of 256.
func BenchmarkIngestVsRaw(b *testing.B) {
	for _, recipients := range []int{1, 10} {
		b.Run("recipients="+strconv.Itoa(recipients), func(b *testing.B) {
			b.ReportAllocs()
			const n = 20000
			var raw, nudge time.Duration
			for i := 0; i < b.N; i++ {
				raw += benchRaw(b, n, recipients)
				nudge += benchNudge(b, n, recipients)
			}
			rawRate := float64(n*b.N) / raw.Seconds()
			rate := float64(n*b.N) / nudge.Seconds()
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(rawRate, "raw-events/s")
			b.ReportMetric(rate/rawRate, "ratio")
		})
	}
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

func benchRaw(b *testing.B, n, recipients int) time.Duration {
	b.StopTimer()
	rdb, ks, done := benchSetup(b, n, recipients)
	defer done()
	ctx := context.Background()
	for s := 0; s < ks.Shards; s++ {
		rdb.XGroupCreate(ctx, ks.Stream(s), "raw", "0")
	}
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for s := 0; s < ks.Shards; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "raw", Consumer: "raw",
					Streams: []string{ks.Stream(s), ">"}, Count: 256, Block: -1}).Result()
				if errors.Is(err, redis.Nil) || err == nil && len(res[0].Messages) == 0 {
					return
				}
				if err != nil {
					b.Error(err)
					return
				}
				ids := make([]string, len(res[0].Messages))
				for i, m := range res[0].Messages {
					ids[i] = m.ID
				}
				rdb.XAck(ctx, ks.Stream(s), "raw", ids...)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

func benchNudge(b *testing.B, n, recipients int) time.Duration {
	b.StopTimer()
	rdb, ks, done := benchSetup(b, n, recipients)
	defer done()
	c, err := ingest.New(rdb, ingest.Config{Keyspace: ks, Consumer: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.StartTimer()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	for c.Stats().Applied.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if got := c.Stats().Applied.Load(); got != int64(n) {
		b.Fatal(fmt.Sprintf("applied %d, want %d", got, n))
	}
	b.StartTimer()
	return elapsed
}
