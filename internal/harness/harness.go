// Package harness is the set-up that tests running Nudge's commands share:
// a push sandbox with its credentials written for the worker, an asynq
// queue of the test's own, and a command run as a process of the test.
// (Redis prefixes, databases and built commands come from redistest,
// pgtest and buildtest.)
package harness

import (
	"context"
	"os/exec"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/push/sandbox"
)

// Sandbox starts a push sandbox with cfg for the test and writes its
// credentials to a directory of the test's own: the worker's flags to use
// it are sb.WorkerArgs(creds), its apps file creds/sandbox.AppsFile. The
// sandbox is closed when the test ends.
func Sandbox(t testing.TB, cfg sandbox.Config) (sb *sandbox.Server, creds string) {
	t.Helper()
	sb, err := sandbox.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	creds = t.TempDir()
	if err := sb.WriteCredentials(creds); err != nil {
		t.Fatal(err)
	}
	return sb, creds
}

// Queue returns the name of an asynq queue of the test's own, "<what>-<prefix>"
// (the prefix being the test's Redis key prefix), deleted with its tasks
// from the shared Redis when the test ends.
func Queue(t testing.TB, what, prefix string) string {
	t.Helper()
	queue := what + "-" + prefix
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
		redistest.DeleteQueue(t, rdb, queue)
		_ = rdb.Close()
	})
	return queue
}

// Start runs the command of package dir (built once, buildtest.Command)
// with args, its output in the test's log; it is killed when the test
// ends.
func Start(t testing.TB, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(buildtest.Command(t, dir), args...)
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}
