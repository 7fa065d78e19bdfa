package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	env := func(k string) string {
		if k == "NUDGE_DATABASE_URL" {
			return url
		}
		return ""
	}
	runOK := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, args, env, &out); err != nil {
			t.Fatalf("migrate %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}

	out := runOK("status")
	if !strings.Contains(out, "VERSION") || !regexp.MustCompile(`0001 +counters +pending`).MatchString(out) || strings.Contains(out, "applied") {
		t.Fatalf("status of an empty database:\n%s", out)
	}
	out = runOK("up", "-steps", "1")
	if out != "applied 0001_counters\n" {
		t.Fatalf("up -steps 1:\n%s", out)
	}
	out = runOK("-database-url", url, "up")
	if !strings.Contains(out, "applied 0002_registry") || strings.Contains(out, "0001") {
		t.Fatalf("up:\n%s", out)
	}
	if out = runOK("up"); out != "nothing to do\n" {
		t.Fatalf("second up:\n%s", out)
	}
	out = runOK("status")
	if strings.Contains(out, "pending") || strings.Count(out, "applied") < 2 {
		t.Fatalf("status after up:\n%s", out)
	}
	if out = runOK("down"); !strings.HasPrefix(out, "reverted ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("down:\n%s", out)
	}
	out = runOK("status")
	if strings.Count(out, "pending") != 1 {
		t.Fatalf("status after down:\n%s", out)
	}
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	tests := []struct {
		name string
		args []string
	}{
		{"no command", nil},
		{"unknown command", []string{"sideways"}},
		{"extra argument", []string{"-database-url", "postgres://x", "up", "now"}},
		{"negative steps", []string{"-database-url", "postgres://x", "down", "-steps", "-1"}},
		{"no database", []string{"status"}},
		{"status has no steps", []string{"-database-url", "postgres://x", "status", "-steps", "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			if err := run(context.Background(), tt.args, noEnv, &out); !errors.Is(err, cli.ErrUsage) {
				t.Fatalf("run = %v, want a usage error", err)
			}
		})
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, noEnv, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "usage:") {
		t.Fatalf("-h = %v\n%s", err, out.String())
	}
}
