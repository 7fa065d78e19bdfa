package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

const testTS = 1767225600000

// bundle is a fresh, isolated pipeline: a Redis key prefix, a producer and
// a consumer config.
type bundle struct {
	rdb *redis.Client
	ks  keys.Keyspace
	pub *producer.Producer
	cfg ingest.Config
}

func setup(t *testing.T) *bundle {
	t.Helper()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 4)
	return &bundle{
		rdb: rdb,
		ks:  ks,
		pub: producer.New(rdb, producer.Config{Keyspace: ks}),
		cfg: ingest.Config{
			Keyspace:     ks,
			Consumer:     "c1",
			ClaimIdle:    2 * time.Second,
			Block:        100 * time.Millisecond,
			TrimInterval: 200 * time.Millisecond,
			Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		},
	}
}

// start runs a consumer until the test ends.
func (b *bundle) start(t *testing.T, cfg ingest.Config) *ingest.Consumer {
	t.Helper()
	c, err := ingest.New(b.rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func (b *bundle) publish(t *testing.T, evs ...*event.Event) {
	t.Helper()
	if _, err := b.pub.PublishBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

// totals sums every counter of every shard and minute still in Redis, by
// field.
func (b *bundle) totals(t *testing.T) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	out := map[string]int64{}
	for s := 0; s < b.ks.Shards; s++ {
		mins, err := b.rdb.ZRange(ctx, b.ks.CounterIndex(s), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mins {
			n, _ := strconv.ParseInt(m, 10, 64)
			h, err := b.rdb.HGetAll(ctx, b.ks.Counters(s, n)).Result()
			if err != nil {
				t.Fatal(err)
			}
			for f, v := range h {
				x, _ := strconv.ParseInt(v, 10, 64)
				out[f] += x
			}
		}
	}
	return out
}

func (b *bundle) metric(t *testing.T, metric string) int64 {
	var n int64
	for f, v := range b.totals(t) {
		d, err := counters.ParseField(f)
		if err != nil {
			t.Fatalf("bad counter field %q", f)
		}
		if d.Metric == metric {
			n += v
		}
	}
	return n
}

func (b *bundle) unread(t *testing.T, user, conv string) (n int64, episode string) {
	t.Helper()
	ctx := context.Background()
	s := b.ks.Shard(conv)
	// One transaction: the episode and its badge field at one moment.
	tx := b.rdb.TxPipeline()
	id := tx.HGet(ctx, b.ks.Episode(s, user, conv), "id")
	count := tx.HGet(ctx, b.ks.Badge(s, user), conv)
	if _, err := tx.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if (id.Val() == "") != (count.Val() == "") {
		t.Fatalf("%s in %s: episode %q, badge field %q: one without the other", user, conv, id.Val(), count.Val())
	}
	n, _ = strconv.ParseInt(count.Val(), 10, 64)
	return n, id.Val()
}

func (b *bundle) badge(t *testing.T, user string) int64 {
	t.Helper()
	var total int64
	for s := 0; s < b.ks.Shards; s++ {
		vals, err := b.rdb.HVals(context.Background(), b.ks.Badge(s, user)).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			n, _ := strconv.ParseInt(v, 10, 64)
			total += n
		}
	}
	return total
}

var seq struct {
	sync.Mutex
	n int
}

func nextID() string {
	seq.Lock()
	defer seq.Unlock()
	seq.n++
	return "ev" + strconv.Itoa(seq.n)
}

func msg(conv, id, sender string, recipients ...string) *event.Event {
	return &event.Event{V: 1, Type: event.TypeMessage, ID: nextID(), TS: testTS,
		Conversation: conv, Message: id, Sender: sender, Recipients: recipients, Preview: "hi " + id}
}

func read(conv, user, upto string) *event.Event {
	return &event.Event{V: 1, Type: event.TypeRead, ID: nextID(), TS: testTS, Conversation: conv, User: user, UpTo: upto}
}

func presence(user, status, device string) *event.Event {
	return &event.Event{V: 1, Type: event.TypePresence, ID: nextID(), TS: testTS, User: user, Status: status, Device: device}
}

// deadLetters returns the reasons in every dead-letter stream.
func (b *bundle) deadLetters(t *testing.T) []string {
	t.Helper()
	var out []string
	for s := 0; s < b.ks.Shards; s++ {
		msgs, err := b.rdb.XRange(context.Background(), b.ks.DeadLetter(s), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			out = append(out, fmt.Sprint(m.Values["reason"]))
		}
	}
	return out
}

func (b *bundle) pendingTotal(t *testing.T, group string) int64 {
	t.Helper()
	var n int64
	for s := 0; s < b.ks.Shards; s++ {
		p, err := b.rdb.XPending(context.Background(), b.ks.Stream(s), group).Result()
		if err != nil && !strings.Contains(err.Error(), "NOGROUP") {
			t.Fatal(err)
		}
		if p != nil {
			n += p.Count
		}
	}
	return n
}
