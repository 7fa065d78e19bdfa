package main

import (
	"bytes"
	"context"
	"net"
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
