package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
)

// lockedBuffer is an io.Writer safe for the demo's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The README's main command works: the demo runs every process, traffic
// flows, reminders reach the push sandbox and counters reach Postgres.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for 80s")
	}
	t.Parallel()
	db := pgtest.NewDatabase(t)
	prefix := redistest.RandomPrefix()
	rdb, _ := redistest.New(t)
	t.Cleanup(func() {
		redistest.DeletePrefix(t, rdb, prefix+":")
		redistest.DeletePrefix(t, rdb, "asynq:{"+prefix+"-reminders}")
	})
	var out lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := run(ctx, []string{"-root", "../..", "-duration", "80s", "-check", "-services=false",
		"-redis-url", "redis://" + redistest.Addr() + "/0", "-database-url", db, "-prefix", prefix,
		"-report-addr", freeAddr(t), "-sandbox-fcm-addr", freeAddr(t), "-sandbox-apns-addr", freeAddr(t),
		"-dir", t.TempDir(), "-stages", "5s,20s"}, func(string) string { return "" }, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	if !strings.Contains(out.String(), "Dashboard: http://admin:") {
		t.Errorf("the demo did not print the dashboard URL")
	}
}

// The README opens with the two commands a newcomer runs. They must stay
// the ones the tests exercise: the demo (TestDemo runs it) and the test
// script (CI runs it through .ci/run).
func TestReadmeCommands(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```sh\n")
	if !ok {
		t.Fatal("README.md has no sh code block")
	}
	block, _, _ := strings.Cut(rest, "```")
	var cmds []string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		cmd, _, _ := strings.Cut(line, "#")
		cmds = append(cmds, strings.TrimSpace(cmd))
	}
	want := []string{"go run ./cmd/demo", "bash scripts/test.sh"}
	if strings.Join(cmds, "\n") != strings.Join(want, "\n") {
		t.Errorf("README's first commands are %q, want %q (the ones the tests run)", cmds, want)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "bash scripts/test.sh") {
		t.Error(".ci/run does not run the README's test command")
	}
	if _, err := os.Stat("../../scripts/services.sh"); err != nil {
		t.Errorf("the demo and the tests set up services with scripts/services.sh: %v", err)
	}
}
