package loadgen_test

import (
	"bufio"
	"bytes"
	"context"
	"testing"

	"github.com/nudgehq/nudge/event"
)

// RecordIDs holds, line for line with Record, the entry id each event got:
// the entry of that id in the event's stream is that event.
func TestRecordIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var record, ids bytes.Buffer
	cfg := small()
	cfg.Total = 2_000
	cfg.Record, cfg.RecordIDs = &record, &ids
	st := b.run(t, cfg)

	events, entries := bufio.NewScanner(&record), bufio.NewScanner(&ids)
	events.Buffer(nil, 1<<20)
	n := 0
	for events.Scan() {
		if !entries.Scan() {
			t.Fatalf("%d entry ids for more events", n)
		}
		n++
		e, err := event.Decode(events.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		stream := b.ks.Stream(b.ks.Shard(e.RoutingKey()))
		got, err := b.rdb.XRange(context.Background(), stream, entries.Text(), entries.Text()).Result()
		if err != nil || len(got) != 1 || got[0].Values["event"] != events.Text() {
			t.Fatalf("entry %s of %s: %v (%v), want event %s", entries.Text(), stream, got, err, events.Text())
		}
	}
	if entries.Scan() {
		t.Errorf("more entry ids than the %d events", n)
	}
	if int64(n) != st.Events-st.Bad {
		t.Errorf("%d events recorded, want %d", n, st.Events-st.Bad)
	}
}
