package ingest_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// BenchmarkIngestBadInput measures whether bad input slows the pipeline
// down. In the same run it times a consumer (8 shards, batches of 256,
// as BenchmarkIngestVsRaw) through two backlogs of 20,000 entries:
//
//   - good: 20,000 one-recipient messages;
//   - bad10: the same traffic with every tenth entry bad (2,000 entries of
//     the bad-input corpus, every kind of reason), of which every 100th is
//     one of the 1 MB entries (20 MB in all).
//
// It reports events/s of the good run, entries/s (applied or
// dead-lettered) and good-events/s of the bad10 run, and ratio, bad10
// entries/s over good events/s: 1 means bad entries cost as much as good
// ones, more means they are cheaper.
func BenchmarkIngestBadInput(b *testing.B) {
	b.ReportAllocs()
	const n = 20000
	var small, huge []badEntry
	for _, e := range badCorpus(b) {
		if len(e.payload) >= 1<<20 {
			huge = append(huge, e)
		} else {
			small = append(small, e)
		}
	}
	var good, mixed time.Duration
	for i := 0; i < b.N; i++ {
		// Alternate the order, so a load on the machine that drifts
		// during the run weighs on both alike.
		if i%2 == 0 {
			good += benchBadInput(b, n, 0, small, huge)
			mixed += benchBadInput(b, n, 10, small, huge)
		} else {
			mixed += benchBadInput(b, n, 10, small, huge)
			good += benchBadInput(b, n, 0, small, huge)
		}
	}
	goodRate := float64(n*b.N) / good.Seconds()
	mixedRate := float64(n*b.N) / mixed.Seconds()
	b.ReportMetric(goodRate, "events/s")
	b.ReportMetric(mixedRate, "bad10-entries/s")
	b.ReportMetric(mixedRate*float64(n-n/10)/n, "bad10-good-events/s")
	b.ReportMetric(mixedRate/goodRate, "ratio")
}

// benchBadInput publishes n entries, one in every badEvery of them bad
// (none if 0), with the timer stopped, then times a consumer until every
// entry is applied or dead-lettered.
func benchBadInput(b *testing.B, n, badEvery int, small, huge []badEntry) time.Duration {
	b.StopTimer()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr(), PoolSize: 32})
	prefix := redistest.RandomPrefix()
	defer func() {
		redistest.DeletePrefix(b, rdb, prefix)
		_ = rdb.Close()
	}()
	ks := keys.New(prefix, 8)
	nbad := 0
	if badEvery > 0 {
		nbad = n / badEvery
	}
	goodEvs := benchEvents(n-nbad, 1)
	var batch []*redis.XAddArgs
	flush := func() {
		if _, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, a := range batch {
				pipe.XAdd(ctx, a)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	g, bad := 0, 0
	for i := 0; i < n; i++ {
		if badEvery > 0 && i%badEvery == badEvery-1 {
			e := small[bad%len(small)]
			if bad%100 == 99 {
				e = huge[(bad/100)%len(huge)]
			}
			a, _ := e.xadd(ks, "route-"+strconv.Itoa(bad))
			batch = append(batch, a)
			bad++
		} else {
			e := goodEvs[g]
			g++
			payload, err := json.Marshal(e) // as producer.Publish, without a round trip each
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, &redis.XAddArgs{Stream: ks.Stream(ks.Shard(e.RoutingKey())), Values: []any{ingest.EventField, payload}})
		}
		if len(batch) == 500 {
			flush()
		}
	}
	flush()

	c, err := ingest.New(rdb, ingest.Config{Keyspace: ks, Consumer: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	b.StartTimer()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(rctx) }()
	st := c.Stats()
	for st.Applied.Load()+st.DeadLettered.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if st.Applied.Load() != int64(g) || st.DeadLettered.Load() != int64(bad) {
		b.Fatalf("applied %d and dead-lettered %d, want %d and %d", st.Applied.Load(), st.DeadLettered.Load(), g, bad)
	}
	b.StartTimer()
	return elapsed
}
