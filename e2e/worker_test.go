package e2e_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/push/sandbox"
)

// End to end through the real binaries: events published to Redis reach
// the ingest process, whose reminders the worker process pushes through the
// real FCM and APNs clients to the sandbox: one push per device of a user
// who stays unread, none for a user who read in time.
func TestEndToEndThroughTheBinaries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newPipeline(t, "e2e")
	queue, db := p.queue, p.db
	sb, creds := harness.Sandbox(t, sandbox.Config{})

	ingestMetrics, workerMetrics := freeport.Addr(t), freeport.Addr(t)
	p.start(t, "../cmd/ingest", "-consumer", "e2e", "-claim-idle", "5s", "-metrics-addr", ingestMetrics)
	p.start(t, "../cmd/worker", append([]string{"-delayed-check-interval", "200ms", "-metrics-addr", workerMetrics}, sb.WorkerArgs(creds)...)...)
	pub := p.pub
	n := 0
	ev := func(e event.Event) *event.Event {
		n++
		e.V, e.ID, e.TS = 1, "e2e-"+strconv.Itoa(n), time.Now().UnixMilli()
		return &e
	}
	bobFCM, bobAPNs := sandbox.NewDeviceToken(event.PlatformFCM), sandbox.NewDeviceToken(event.PlatformAPNs)
	carolFCM := sandbox.NewDeviceToken(event.PlatformFCM)
	if _, err := pub.PublishBatch(ctx, []*event.Event{
		ev(event.Event{Type: event.TypeDeviceRegistered, User: "bob", Platform: event.PlatformFCM, Token: bobFCM}),
		ev(event.Event{Type: event.TypeDeviceRegistered, User: "bob", Platform: event.PlatformAPNs, Token: bobAPNs}),
		ev(event.Event{Type: event.TypeDeviceRegistered, User: "carol", Platform: event.PlatformFCM, Token: carolFCM}),
	}); err != nil {
		t.Fatal(err)
	}
	poll.UntilState(t, 20*time.Second, "ingest to store 3 devices", func() (bool, string) {
		var devices int
		_ = db.QueryRow(ctx, "SELECT count(*) FROM devices").Scan(&devices)
		return devices == 3, fmt.Sprintf("%d stored", devices)
	})
	sent := time.Now()
	if _, err := pub.PublishBatch(ctx, []*event.Event{
		ev(event.Event{Type: event.TypeMessage, Conversation: "c1", Message: "m1", Sender: "alice", Recipients: []string{"bob"}, Preview: "lunch?"}),
		ev(event.Event{Type: event.TypeMessage, Conversation: "c2", Message: "m2", Sender: "alice", Recipients: []string{"carol"}, Preview: "call me"}),
		ev(event.Event{Type: event.TypeRead, Conversation: "c2", User: "carol"}),
	}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sb.WaitFor(wctx, func(d []sandbox.Delivery) bool { return len(d) >= 2 }); err != nil {
		t.Fatal(err)
	}
	// Let every reminder of the queue run out, then look at what arrived.
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: redistest.Addr()})
	defer insp.Close()
	poll.UntilState(t, 45*time.Second, "the reminder queue to drain", func() (bool, string) {
		q, err := insp.GetQueueInfo(queue)
		return err == nil && q.Pending+q.Active+q.Scheduled+q.Retry == 0, fmt.Sprintf("%+v %v", q, err)
	})
	for _, tok := range []string{bobFCM, bobAPNs} {
		ds := sb.DeliveriesTo(tok)
		if len(ds) != 1 {
			t.Errorf("bob's device got %d pushes, want 1", len(ds))
			continue
		}
		if ds[0].Time.Before(sent.Add(2*time.Second)) || ds[0].Body != "alice: lunch?" || ds[0].CollapseKey != "c1" {
			t.Errorf("push %+v: want the preview, collapse key c1, after the 2s delay", ds[0])
		}
	}
	if ds := sb.DeliveriesTo(carolFCM); len(ds) != 0 {
		t.Errorf("carol read in time but got %+v", ds)
	}

	// The metrics tell the same story.
	metricstest.WaitFor(t, ingestMetrics, "nudge_ingest_events_applied_total", 6)
	metricstest.WaitFor(t, ingestMetrics, `nudge_reminders_total{outcome="scheduled",reason=""}`, 2)
	metricstest.WaitFor(t, workerMetrics, `nudge_push_total{outcome="delivered",platform="fcm",reason="delivered"}`, 1)
	metricstest.WaitFor(t, workerMetrics, `nudge_push_total{outcome="delivered",platform="apns",reason="delivered"}`, 1)
	metricstest.WaitFor(t, workerMetrics, `nudge_reminders_total{outcome="sent",reason=""}`, 1)
	if v := metricstest.Value(t, workerMetrics, "nudge_push_duration_seconds_count"); v != 2 {
		t.Errorf("nudge_push_duration_seconds_count = %v, want 2 (one send per platform)", v)
	}
	if v := metricstest.Value(t, workerMetrics, "asynq_queue_size"); v < 0 {
		t.Errorf("asynq_queue_size = %v", v)
	}
	for _, addr := range []string{ingestMetrics, workerMetrics} {
		if code, body := metricstest.Get(t, addr, "/readyz"); code != 200 {
			t.Errorf("%s /readyz = %d %s", addr, code, body)
		}
	}
}
