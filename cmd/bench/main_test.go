package main

import (
	"bytes"
	"strings"
	"testing"
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
	if err == nil || !strings.Contains(err.Error(), "shares within 0 to 1") {
		t.Errorf("-group-share 30: %v, want an error about shares", err)
	}
}
