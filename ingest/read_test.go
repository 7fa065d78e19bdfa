package ingest

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/redistest"
)

// A read or claim script runs alone in Redis, so one call pulls at most
// about maxReadBytes of entries: of 64 entries of 2 MB it takes the first
// 4 (8 MB, not 128 MB), and the next call the next 4, in order. Entries of
// ordinary size still come in one call per batch.
func TestBoundedScriptsPullAFewMegabytesAtATime(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ctx := context.Background()
	const group, consumer = "g", "c"

	big := prefix + ":big"
	payload := strings.Repeat("a", 2<<20)
	pipe := redistest.Bulk(t).Pipeline() // 128 MB: longer timeouts
	for range 64 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: big, Values: []any{"event", payload}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XGroupCreate(ctx, big, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	all, err := rdb.XRangeN(ctx, big, "-", "+", 8).Result()
	if err != nil {
		t.Fatal(err)
	}
	read := func() []redis.XMessage {
		t.Helper()
		reply, err := readScript.Run(ctx, rdb, []string{big}, maxEntryBytes, maxDeadPayload, group, consumer, 64, maxReadBytes).Result()
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := parseEntries(reply)
		if err != nil {
			t.Fatal(err)
		}
		return msgs
	}
	for call, want := range [][]redis.XMessage{all[:4], all[4:8]} {
		got := read()
		if len(got) != len(want) {
			t.Fatalf("read call %d: %d entries, want %d", call+1, len(got), len(want))
		}
		for i, m := range got {
			if size, ok := oversized(m); m.ID != want[i].ID || !ok || size != int64(len("event")+len(payload)) {
				t.Errorf("read call %d entry %d: %s, oversized %v (%d B); want %s, oversized", call+1, i, m.ID, ok, size, want[i].ID)
			}
		}
	}

	// The eight read are pending: a claim of all of them takes 4 as well,
	// and leaves the rest pending for the next claim.
	args := []any{maxEntryBytes, maxDeadPayload, group, "other", maxReadBytes}
	for _, m := range all[:8] {
		args = append(args, m.ID)
	}
	reply, err := claimEntriesScript.Run(ctx, rdb, []string{big}, args...).Result()
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := parseEntries(reply)
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 4 || claimed[0].ID != all[0].ID || claimed[3].ID != all[3].ID {
		t.Errorf("claim of 8 entries of 2 MB: %d claimed, want the first 4", len(claimed))
	}
	pend, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: big, Group: group, Start: "-", End: "+", Count: 10}).Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pend {
		if want := map[bool]string{true: "other", false: consumer}[i < 4]; p.Consumer != want {
			t.Errorf("pending %s is %s's, want %s's", p.ID, p.Consumer, want)
		}
	}

	small := prefix + ":small"
	for range 256 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: small, Values: []any{"event", `{"v":1}`}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XGroupCreate(ctx, small, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	reply, err = readScript.Run(ctx, rdb, []string{small}, maxEntryBytes, maxDeadPayload, group, consumer, 256, maxReadBytes).Result()
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err := parseEntries(reply); err != nil || len(msgs) != 256 {
		t.Errorf("a batch of 256 small entries: %d read in one call (%v), want 256", len(msgs), err)
	}
}
