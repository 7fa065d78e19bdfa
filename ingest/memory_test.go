package ingest_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
)

// After traffic and the reads of every conversation by every user, the
// only keys left are the documented ones, and each either has a TTL or is a
// stream that is trimmed by design (docs/keys.md).
func TestMemoryBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)
	evs := traffic(7, 3000)
	for i := 0; i < 50; i++ {
		evs = append(evs, presence("u1", "online", "d"+string(rune('a'+i%5))))
	}
	b.publish(t, evs...)
	distinct := map[string]bool{}
	for _, e := range evs {
		distinct[e.ID] = true
	}
	poll.Until(t, 30*time.Second, "traffic applied", func() bool { return b.metric(t, "events_applied") == int64(len(distinct)) })

	var reads []*event.Event
	for c := 0; c < 12; c++ {
		for u := 1; u <= 6; u++ {
			reads = append(reads, read("c"+strconv.Itoa(c), "u"+strconv.Itoa(u), ""))
		}
	}
	b.publish(t, reads...)
	poll.Until(t, 30*time.Second, "reads applied", func() bool {
		return b.metric(t, "events_applied") == int64(len(distinct)+len(reads))
	})
	poll.Until(t, 10*time.Second, "streams trimmed", func() bool {
		var n int64
		for s := 0; s < b.ks.Shards; s++ {
			n += b.rdb.XLen(context.Background(), b.ks.Stream(s)).Val()
		}
		return n == 0
	})

	ctx := context.Background()
	all, err := redistest.Keys(ctx, b.rdb, b.ks.Prefix+":")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, k := range all {
		kind := keyKind(k)
		kinds[kind]++
		switch kind {
		case "events", "dead":
			// Streams: trimmed by ingest (events) and MAXLEN (dead letters).
			continue
		case "ep", "badge":
			t.Errorf("unread state %s left after every conversation was read", k)
		}
		if ttl := b.rdb.TTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has no TTL (%s)", k, ttl)
		}
	}
	allowed := map[string]bool{"events": true, "dead": true, "lease": true, "seen": true, "conv": true, "recent": true,
		"cnt": true, "cntidx": true, "dau": true, "dauidx": true, "members": true, "presence": true}
	for kind := range kinds {
		if !allowed[kind] {
			t.Errorf("undocumented key kind %q", kind)
		}
	}
	t.Logf("keys left by kind: %v", kinds)
}

// keyKind returns the kind of a key: the part after the hash tag, up to
// the next colon.
func keyKind(k string) string {
	_, rest, ok := strings.Cut(k, "}:")
	if !ok {
		return k
	}
	kind, _, _ := strings.Cut(rest, ":")
	return kind
}
