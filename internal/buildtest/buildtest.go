// Package buildtest builds Nudge's commands for tests that run them as real
// processes (to kill them with SIGKILL, say). Each command is built once
// per test binary, into a directory removed by Cleanup.
package buildtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	dir   string
	built = map[string]error{}
)

// Command builds the package at path (relative to the test's package, e.g.
// "../cmd/ingest") once, and returns the binary's path.
func Command(t testing.TB, path string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("buildtest: builds a command (go test -short runs only what builds nothing)")
	}
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		d, err := os.MkdirTemp("", "nudge-test-bin")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(abs))
	err, ok := built[abs]
	if !ok {
		if b, berr := exec.Command("go", "build", "-o", out, abs).CombinedOutput(); berr != nil {
			err = fmt.Errorf("go build %s: %v\n%s", path, berr, b)
		}
		built[abs] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Cleanup removes the built commands. Call it from TestMain after m.Run.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		_ = os.RemoveAll(dir)
		dir = ""
		built = map[string]error{}
	}
}
