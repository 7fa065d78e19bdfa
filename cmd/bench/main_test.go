package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/internal/cli"
)

// bench -plan prints the sizing of a load, as an operator runs it, and a
// load that makes no sense is an error, not a table.
func TestPlan(t *testing.T) {
	var out, errOut bytes.Buffer
	getenv := func(string) string { return "" }
	if err := run(t.Context(), []string{"-plan", "-dau", "100000000"}, getenv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"100.0M", "Redis Cluster masters", "worker replicas", "ingest replicas"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	err := run(t.Context(), []string{"-plan", "-group-share", "30"}, getenv, &out, &errOut)
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "shares within 0 to 1") {
		t.Errorf("-group-share 30: %v, want a usage error about shares", err)
	}
}

// bench -plan -costs takes the per-unit costs from a run's bench.json, as
// an operator sizes from a run on their own machine; a file that is not
// one is an error naming it.
func TestPlanFromCosts(t *testing.T) {
	dir := t.TempDir()
	costs := filepath.Join(dir, "bench.json")
	if err := os.WriteFile(costs, []byte(`{"ingest_redis_us_per_event": 12.5, "push_per_s": 4000}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	getenv := func(string) string { return "" }
	if err := run(t.Context(), []string{"-plan", "-costs", costs, "-cores", "4"}, getenv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	// 4,000 pushes/s over 4 cores: 1.0k a core.
	for _, want := range []string{"12.5 µs a message", "1.0k pushes/s a core"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	bad := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(bad, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), []string{"-plan", "-costs", bad}, getenv, &out, &errOut); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("-costs %s: %v, want an error naming the file", bad, err)
	}
}

// A step that does not exist is a usage error naming it and the steps
// there are, before anything is measured.
func TestStepsTypo(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"-steps", "push,pushes", "-redis-addr", "127.0.0.1:1"}, func(string) string { return "" }, &out, &errOut)
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), `"pushes"`) || !strings.Contains(err.Error(), "burst, push, lateness") {
		t.Errorf("-steps push,pushes: %v, want a usage error naming the step and the steps", err)
	}
}
