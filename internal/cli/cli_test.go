package cli

import (
	"bytes"
	"errors"
	"flag"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/internal/flagenv"
)

func TestGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	unset := func(string) string { return "" }
	if got := GCPercent(unset, 250); got != 250 {
		t.Errorf("GOGC unset: GCPercent = %d, want 250", got)
	}
	if got := debug.SetGCPercent(100); got != 250 {
		t.Errorf("GOGC unset: the collector's percentage is %d, want 250", got)
	}
	// The runtime read GOGC when the process started; an operator's GOGC
	// is left as it is.
	gogc := func(k string) string {
		if k == "GOGC" {
			return "100"
		}
		return ""
	}
	if got := GCPercent(gogc, 250); got != 100 {
		t.Errorf("GOGC=100: GCPercent = %d, want 100", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=100: the collector's percentage is %d, want 100", got)
	}
}

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{flag.ErrHelp, 0, ""},
		{Usagef("-shards must be positive, not %d", 0), 2, "tool: usage: -shards must be positive, not 0\n"},
		{Usage(errors.New("flag provided but not defined: -x")), 2, "tool: usage: flag provided but not defined: -x\n"},
		{errors.New("redis 127.0.0.1:6379: connection refused"), 1, "tool: redis 127.0.0.1:6379: connection refused\n"},
	} {
		var out bytes.Buffer
		if code := ExitCode(&out, "tool", tt.err); code != tt.code || out.String() != tt.out {
			t.Errorf("ExitCode(%v) = %d, %q; want %d, %q", tt.err, code, out.String(), tt.code, tt.out)
		}
	}
}

func TestParse(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	newFS := func() (*flagenv.FlagSet, *Service) {
		var s Service
		fs := flagenv.NewFlagSet("tool", "tool: a service", flagenv.EnvName)
		fs.SetOutput(&bytes.Buffer{})
		s.Register(fs.FlagSet, ServiceFlags{MetricsAddr: "127.0.0.1:9", Postgres: "the registry", PostgresRequired: true})
		return fs, &s
	}

	fs, s := newFS()
	if err := Parse(fs, []string{"-shards", "4"}, env(map[string]string{"NUDGE_PREFIX": "p", "NUDGE_DATABASE_URL": "postgres://db/x"}), false); err != nil {
		t.Fatal(err)
	}
	if ks := s.Keys(); ks.Prefix != "p" || ks.Shards != 4 || s.MetricsAddr != "127.0.0.1:9" {
		t.Errorf("settings %+v, keyspace %+v", s, ks)
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}

	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string // in the error; every one a usage error
	}{
		{[]string{"-no-such-flag"}, nil, "no-such-flag"},
		{[]string{"extra"}, nil, "unexpected arguments"},
		{nil, map[string]string{"NUDGE_SHARDS": "many"}, "NUDGE_SHARDS"},
	} {
		fs, _ := newFS()
		err := Parse(fs, tt.args, env(tt.env), false)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q, %v) = %v, want a usage error naming %s", tt.args, tt.env, err, tt.want)
		}
	}
	fs, _ = newFS()
	if err := Parse(fs, []string{"-h"}, env(nil), false); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}

	// Check names every bad setting at once.
	fs, s = newFS()
	if err := Parse(fs, []string{"-shards", "0", "-log-level", "loud", "-redis-url", "http://x"}, env(nil), false); err != nil {
		t.Fatal(err)
	}
	err := s.Check()
	for _, want := range []string{"-shards", "-log-level", "-redis-url", "-database-url"} {
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), want) {
			t.Errorf("Check = %v, want a usage error naming %s", err, want)
		}
	}
}
