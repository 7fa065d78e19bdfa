package ingest_test

import (
	"context"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
)

// startIngest starts a real ingest process.
func (b *bundle) startIngest(t *testing.T, consumer string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(buildtest.Command(t, "../cmd/ingest"),
		"-redis-url", "redis://"+redistest.Addr()+"/0",
		"-prefix", b.ks.Prefix, "-shards", strconv.Itoa(b.ks.Shards),
		"-consumer", consumer, "-claim-idle", "2s", "-batch", "64", "-log-level", "warn", "-reminders=false", "-metrics-addr=")
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// Real ingest processes are SIGKILLed mid-stream, restarted under the same
// name and replaced by another; every event is still applied exactly once
// and in order: the counters are exact and the unread state matches the
// oracle.
func TestKillConsumerProcess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	evs := traffic(42, 6000)
	o := oracle.New(128)
	distinct := map[string]bool{}
	var messages int64
	for _, e := range evs {
		o.Apply(e)
		if !distinct[e.ID] && e.Type == "message.sent" {
			messages++
		}
		distinct[e.ID] = true
	}
	b.publish(t, evs...)

	kill := func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_, _ = cmd.Process.Wait()
	}
	p1 := b.startIngest(t, "k1")
	poll.Until(t, 30*time.Second, "some applied", func() bool { return b.metric(t, "events_applied") > 500 })
	kill(p1)
	p2 := b.startIngest(t, "k1") // restarted under its stable name
	applied := b.metric(t, "events_applied")
	poll.Until(t, 30*time.Second, "more applied", func() bool { return b.metric(t, "events_applied") > applied+1000 })
	kill(p2)
	b.startIngest(t, "k2") // a different consumer takes over
	poll.Until(t, 60*time.Second, "every event applied", func() bool {
		return b.metric(t, "events_applied") == int64(len(distinct))
	})

	if got := b.metric(t, "messages_sent"); got != messages {
		t.Errorf("messages_sent %d, want %d", got, messages)
	}
	if got, want := b.metric(t, "events_applied")+0, int64(len(distinct)); got != want {
		t.Errorf("events_applied %d, want %d", got, want)
	}
	for k, want := range o.Unread() {
		if got, _ := b.unread(t, k.User, k.Conversation); got != int64(want) {
			t.Errorf("unread %v = %d, want %d", k, got, want)
		}
	}
	users := o.Badges()
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5", "u6"} {
		if got, want := b.badge(t, u), users[u]; got != int64(want) {
			t.Errorf("badge of %s = %d, want %d", u, got, want)
		}
	}
	poll.Until(t, 10*time.Second, "nothing pending", func() bool { return b.pendingTotal(t, "nudge-ingest") == 0 })
}

// SIGTERM stops an ingest process cleanly: exit status 0, the lease given
// back, nothing left pending.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publish(t, traffic(3, 2000)...)
	p := b.startIngest(t, "term")
	poll.Until(t, 30*time.Second, "some applied", func() bool { return b.metric(t, "events_applied") > 100 })
	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("ingest exited with %v after SIGTERM, want status 0", err)
	}
	if n := b.pendingTotal(t, "nudge-ingest"); n != 0 {
		t.Errorf("%d entries left pending", n)
	}
	for s := 0; s < b.ks.Shards; s++ {
		if v := b.rdb.Get(context.Background(), b.ks.Lease(s)).Val(); v != "" {
			t.Errorf("lease of shard %d still held by %q", s, v)
		}
	}
}
