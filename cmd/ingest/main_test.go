package main

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// A running ingest counts what it does in /metrics and is ready once it
// has joined the group.
func TestMetrics(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	metrics := freeport.Addr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out harness.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-redis-url", "redis://" + redistest.Addr() + "/0", "-prefix", prefix, "-shards", "2",
			"-consumer", "metrics-test", "-reminders=false", "-metrics-addr", metrics}, func(string) string { return "" }, &out)
	}()

	const n = 25
	pub := producer.New(rdb, producer.Config{Keyspace: ks})
	var evs []*event.Event
	for i := range n {
		evs = append(evs, &event.Event{V: 1, ID: "m" + strconv.Itoa(i), TS: time.Now().UnixMilli(), Type: event.TypeMessage,
			Conversation: "c" + strconv.Itoa(i%5), Message: "msg" + strconv.Itoa(i), Sender: "alice", Recipients: []string{"bob"}})
	}
	if _, err := pub.PublishBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishBatch(ctx, evs[:3]); err != nil { // producer retries
		t.Fatal(err)
	}
	if _, err := pub.PublishRaw(ctx, "x", []byte("{not json")); err != nil {
		t.Fatal(err)
	}

	metricstest.WaitFor(t, metrics, "nudge_ingest_events_applied_total", n)
	metricstest.WaitFor(t, metrics, "nudge_ingest_duplicates_total", 3)
	metricstest.WaitFor(t, metrics, `nudge_ingest_dead_lettered_total{reason="invalid_json"}`, 1)
	metricstest.WaitFor(t, metrics, "nudge_ingest_entries_read_total", n+3+1)
	metricstest.WaitFor(t, metrics, "nudge_ingest_shards_owned", 2)
	if v := metricstest.Value(t, metrics, "nudge_ingest_batch_duration_seconds_count"); v < 1 {
		t.Errorf("nudge_ingest_batch_duration_seconds_count = %v", v)
	}
	if code, body := metricstest.Get(t, metrics, "/readyz"); code != http.StatusOK || !strings.Contains(body, "consumer group: ok") || !strings.Contains(body, "redis: ok") {
		t.Errorf("/readyz = %d\n%s", code, body)
	}
	if code, _ := metricstest.Get(t, metrics, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if code, _ := metricstest.Get(t, metrics, "/healthz"); code != 0 {
		t.Errorf("the metrics server still answers after run returned: %d", code)
	}
}

func TestBadSettings(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-redis-url", "http://x"}, "-redis-url"},
		{[]string{"-redis-cluster", "nohost"}, "-redis-cluster"},
		{[]string{"-redis-ca-file", "/nonexistent.pem", "-redis-url", "rediss://x:6379"}, "-redis-ca-file"},
		{[]string{"-redis-ca-file", "/nonexistent.pem"}, "rediss://"},
		{[]string{"-log-level", "loud"}, "-log-level"},
		{[]string{"-stages", "soon"}, "-stages"},
		{[]string{"-database-url", "postgres://x:y:z", "-reminders=false"}, "-database-url"},
	} {
		err := run(context.Background(), tt.args, func(string) string { return "" }, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run %q = %v, want an error naming %s", tt.args, err, tt.want)
		}
	}
}
