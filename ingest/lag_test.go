package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// exportLag reads the lag, the pending count and the age of the oldest
// undelivered entry from the consumer group itself, whatever the shard
// loop did last.
func TestExportLag(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ctx := context.Background()
	ks := keys.New(prefix, 1)
	now := time.Now()
	var logs strings.Builder
	c := &Consumer{rdb: rdb, ks: ks, cfg: Config{Group: DefaultGroup, Now: func() time.Time { return now }}, met: newMetrics(prometheus.NewRegistry()),
		lost: map[int]int64{}, behind: map[int]bool{}, log: slog.New(slog.NewTextHandler(&logs, nil))}
	stream := ks.Stream(0)
	if err := rdb.XGroupCreateMkStream(ctx, stream, DefaultGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Ten entries, 60 s to 51 s old; the group has read (and not
	// acknowledged) the first three.
	for i := range 10 {
		id := fmt.Sprintf("%d-0", now.Add(time.Duration(i-60)*time.Second).UnixMilli())
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: id, Values: []any{"e", "{}"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: DefaultGroup, Consumer: "c", Streams: []string{stream, ">"}, Count: 3}).Err(); err != nil {
		t.Fatal(err)
	}
	c.exportLag(ctx, 0)
	if got := gauge(c.met.lag.WithLabelValues("0")); got != 7 {
		t.Errorf("lag %v, want 7", got)
	}
	if got := gauge(c.met.pending.WithLabelValues("0")); got != 3 {
		t.Errorf("pending %v, want 3", got)
	}
	// The oldest undelivered entry is the fourth: 57 s old.
	if got := gauge(c.met.lagSeconds.WithLabelValues("0")); got != 57 {
		t.Errorf("lag seconds %v, want 57", got)
	}
	// Behind by more than 30 s: said once in the log.
	c.exportLag(ctx, 0)
	if n := strings.Count(logs.String(), "shard behind"); n != 1 {
		t.Errorf("%d log lines about the shard behind, want 1:\n%s", n, logs.String())
	}
	// All read: no lag, whatever the age of the entries.
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: DefaultGroup, Consumer: "c", Streams: []string{stream, ">"}}).Err(); err != nil {
		t.Fatal(err)
	}
	c.exportLag(ctx, 0)
	if got := gauge(c.met.lagSeconds.WithLabelValues("0")); got != 0 {
		t.Errorf("lag seconds %v once all is read, want 0", got)
	}
	if !strings.Contains(logs.String(), "shard caught up") {
		t.Errorf("no log line when the shard caught up:\n%s", logs.String())
	}
}

func gauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	_ = g.Write(&m)
	return m.GetGauge().GetValue()
}

// A producer's MAXLEN trims entries before the group read them: they are
// counted as lost (nudge_ingest_trimmed_unread) and left out of the lag,
// which Redis keeps counting them in.
func TestTrimmedBeforeRead(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ctx := context.Background()
	ks := keys.New(prefix, 1)
	c := &Consumer{rdb: rdb, ks: ks, cfg: Config{Group: DefaultGroup, Now: time.Now}, met: newMetrics(prometheus.NewRegistry()),
		lost: map[int]int64{}, behind: map[int]bool{}, log: slog.New(slog.DiscardHandler)}
	stream := ks.Stream(0)
	if err := rdb.XGroupCreateMkStream(ctx, stream, DefaultGroup, "0").Err(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"e", "{}"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: DefaultGroup, Consumer: "c", Streams: []string{stream, ">"}, Count: 3}).Err(); err != nil {
		t.Fatal(err)
	}
	c.exportLag(ctx, 0)
	if got := gauge(c.met.trimmed.WithLabelValues("0")); got != 0 {
		t.Errorf("trimmed %v before any trim, want 0", got)
	}
	// A producer adds with MAXLEN 2: five unread entries go.
	if err := rdb.XTrimMaxLen(ctx, stream, 2).Err(); err != nil {
		t.Fatal(err)
	}
	c.exportLag(ctx, 0)
	if got := gauge(c.met.trimmed.WithLabelValues("0")); got != 5 {
		t.Errorf("trimmed %v, want 5", got)
	}
	if got := gauge(c.met.lag.WithLabelValues("0")); got != 2 {
		t.Errorf("lag %v, want the 2 entries still there", got)
	}
}
