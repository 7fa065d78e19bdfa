package ingest_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/poll"
)

// A read converts the last stage pushed before it was published, within
// the conversion window, once; the times compared are the shard's Redis
// clock (the read's entry id and the worker's push records, rs).
func TestConversionAttribution(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.ConversionWindow = time.Hour
	b.start(t, cfg)
	ctx := context.Background()

	convs := []string{"c1", "c2", "c3", "c4", "c5"}
	for _, c := range convs {
		b.publish(t, msg(c, "m-"+c, "alice", "bob"))
	}
	poll.Until(t, 10*time.Second, "five episodes opened", func() bool { return b.metric(t, "episodes_opened") == 5 })

	// Push records as the worker writes them, dated around now (Redis's
	// clock, as the reads' entry ids will be).
	tm, err := b.rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) string { return strconv.FormatInt(tm.Add(d).UnixMilli(), 10) }
	rs := map[string]string{
		"c1": "1|" + at(-90*time.Second) + "|fcm,2|" + at(10*time.Minute) + "|apns", // stage 2 recorded after the read: stage 1
		"c2": "1|" + at(-2*time.Hour) + "|apns",                                     // pushed before the window
		"c3": "1|" + at(10*time.Minute) + "|fcm",                                    // recorded after the read was published
		"c5": "1|" + at(-5*time.Minute) + "|apns,2|" + at(-time.Second) + "|apns",   // the last before the read: stage 2
	}
	for c, v := range rs {
		if err := b.rdb.HSet(ctx, b.ks.Episode(b.ks.Shard(c), "bob", c), "rs", v).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Reads of c1..c4 (c4 never pushed), and a reply in c5, which reads it
	// too; then c1 read again, which converts nothing more.
	for _, c := range convs[:4] {
		b.publish(t, read(c, "bob", ""))
	}
	b.publish(t, msg("c5", "m-reply", "bob", "alice"))
	b.publish(t, read("c1", "bob", ""))
	poll.Until(t, 10*time.Second, "five episodes closed", func() bool { return b.metric(t, "episodes_closed") == 5 })

	got := map[counters.Dims]int64{}
	for f, v := range b.totals(t) {
		d, err := counters.ParseField(f)
		if err != nil {
			t.Fatal(err)
		}
		if d.Metric == "reminders_converted" || d.Metric == "reminder_read_seconds" {
			got[d] += v
		}
	}
	want := map[counters.Dims]int64{
		{Metric: "reminders_converted", App: "default", Platform: "fcm", Reason: "1"}:       1,
		{Metric: "reminder_read_seconds", App: "default", Platform: "fcm", Reason: "1:120"}: 1,
		{Metric: "reminders_converted", App: "default", Platform: "apns", Reason: "2"}:      1,
		{Metric: "reminder_read_seconds", App: "default", Platform: "apns", Reason: "2:30"}: 1,
	}
	for d, n := range want {
		if got[d] != n {
			t.Errorf("%+v: %d, want %d", d, got[d], n)
		}
	}
	for d, n := range got {
		if _, ok := want[d]; !ok {
			t.Errorf("unexpected %+v: %d", d, n)
		}
	}
}
