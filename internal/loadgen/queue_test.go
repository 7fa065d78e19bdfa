package loadgen

import (
	"math/rand/v2"
	"testing"
	"time"
)

func timeAt(ns int64) time.Time { return time.Unix(0, ns) }

func TestQueueOrder(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	var q queue
	for i := range 1000 {
		q.push(task{due: r.Int64N(100), seq: uint64(i + 1)})
	}
	q.filter(func(t *task) bool { return t.seq%3 != 0 })
	if len(q) != 667 {
		t.Fatalf("%d tasks after filtering, want 667", len(q))
	}
	var prev task
	for len(q) > 0 {
		tk := q.pop()
		if tk.seq%3 == 0 {
			t.Fatalf("task %d survived the filter", tk.seq)
		}
		if tk.due < prev.due || tk.due == prev.due && tk.seq < prev.seq {
			t.Fatalf("task (%d, %d) after (%d, %d)", tk.due, tk.seq, prev.due, prev.seq)
		}
		prev = tk
	}
}

// Cancelled reads do not pile up in the queue.
func TestQueueStaysShort(t *testing.T) {
	t.Parallel()
	g, err := NewGenerator(Config{DeviceFraction: -1, PrefsFraction: -1, ReadDelayMax: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := int64(1767225600) * 1e9
	for i := range 150_000 {
		g.Next(timeAt(now + int64(i)*1e5)) // 10,000 per second, 15s of clock
	}
	if limit := 2*g.PendingReads() + 2048; len(g.q) > limit {
		t.Errorf("queue holds %d tasks for %d pending reads", len(g.q), g.PendingReads())
	}
}
