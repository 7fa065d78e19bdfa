package jobs_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/push/sandbox"
)

func TestMain(m *testing.M) { buildtest.Main(m) }

// A worker process is SIGKILLed while a reminder is half delivered (one
// device got it, the other's provider keeps failing): a new worker finishes
// the reminder, and the device that got it is never pushed again.
func TestWorkerKilledMidReminder(t *testing.T) {
	t.Parallel()
	// The in-process worker of this env is stopped at once: this test's
	// worker is a real process.
	e := setup(t, options{stages: []time.Duration{time.Second}, noWorker: true})
	fcm, apns := e.devices(t, "bob")
	if err := e.sb.InjectFault(sandbox.Fault{Token: apns, Kind: sandbox.FaultServerError, Times: 6}); err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	if err := e.sb.WriteCredentials(creds); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(buildtest.Command(t, "../cmd/worker"), append([]string{
			"-redis-url", "redis://" + redistest.Addr() + "/0", "-prefix", e.ks.Prefix, "-shards", strconv.Itoa(e.ks.Shards),
			"-database-url", e.dbURL, "-queue", e.queue, "-stages", "1s", "-delayed-check-interval", "100ms",
			"-log-level", "warn", "-metrics-addr="}, e.sb.WorkerArgs(creds)...)...)
		cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	e.publish(t, msg("c1", "m1", "alice", "bob"))
	w1 := start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= 1 }); err != nil {
		t.Fatal(err)
	}
	// The FCM device has it; the APNs one failed four times, and the
	// reminder waits for its next try, a task of its own. Kill the worker
	// now. (A worker killed while a task is active is recovered by asynq
	// once the task's lease expires, 30 s to 90 s later; the sent set works
	// the same way then.)
	poll.Until(t, 20*time.Second, "the reminder's next try scheduled", func() bool {
		tasks, err := e.insp.ListScheduledTasks(e.queue)
		return err == nil && len(tasks) == 1 && strings.HasSuffix(tasks[0].ID, "|t1")
	})
	if err := w1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = w1.Process.Wait()
	start()
	// The killed worker may have held bob's send lock (taken until its run
	// settled): it lives out its 15 s TTL, and the new worker puts the
	// reminder off until it is gone.
	ctx, cancel = context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(e.sb.DeliveriesTo(apns)) == 1 }); err != nil {
		t.Fatal(err)
	}
	e.idle(t)
	if n := len(e.sb.DeliveriesTo(fcm)); n != 1 {
		t.Errorf("the FCM device got %d pushes, want 1", n)
	}
	if n := len(e.sb.DeliveriesTo(apns)); n != 1 {
		t.Errorf("the APNs device got %d pushes, want 1", n)
	}
	e.wantMetric(t, "reminders_sent", "", 1)
}
