package redistest

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/freeport"
)

// Server returns the path of redis-server for a test that starts servers
// of its own (what names them). It skips the test under go test -short,
// which runs only what needs no service, and when redis-server is not
// installed (scripts/services.sh installs it).
func Server(t testing.TB, what string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("starts %s (go test -short runs only what needs no service)", what)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skipf("starts %s: redis-server is not installed (scripts/services.sh installs it)", what)
	}
	return bin
}

// Private starts a redis-server of the test's own on a free loopback port,
// without persistence, for a test that changes the server's settings (its
// memory limit, say); it is killed when the test ends. The test is skipped
// when there is no redis-server on the PATH.
func Private(t testing.TB) (*redis.Client, string) {
	t.Helper()
	bin := Server(t, "a private redis-server")
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("redistest: the private redis-server on %s does not answer", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return rdb, addr
}
