package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	env   map[string]string
	ks    keys.Keyspace
	url   string
	added int64
}

func setup(t *testing.T) *bundle {
	t.Helper()
	rdb, prefix := redistest.New(t)
	url := pgtest.NewDatabase(t)
	b := &bundle{
		env: map[string]string{
			"NUDGE_REDIS_URL":    "redis://" + redistest.Addr() + "/0",
			"NUDGE_DATABASE_URL": url,
			"NUDGE_PREFIX":       prefix,
			"NUDGE_SHARDS":       "3",
			"NUDGE_GRACE":        "1s",
			"NUDGE_INTERVAL":     "50ms",
		},
		ks:  keys.New(prefix, 3),
		url: url,
	}
	// Closed minutes: a few minutes ago, in this month's partition.
	at := time.Now().Add(-3 * time.Minute)
	for shard := range 3 {
		incr := map[counters.Dims]int64{{Metric: counters.MessagesSent, App: "chat"}: int64(10 + shard)}
		if err := counters.Add(context.Background(), rdb, b.ks, shard, at, incr); err != nil {
			t.Fatal(err)
		}
		b.added += int64(10 + shard)
	}
	return b
}

func (b *bundle) getenv(k string) string { return b.env[k] }

func (b *bundle) total(t *testing.T) int64 {
	t.Helper()
	db, err := pgxpool.New(context.Background(), b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(context.Background(), "SELECT coalesce(sum(value), 0) FROM counters_day WHERE metric = $1", counters.MessagesSent).Scan(&n); err != nil {
		return -1 // not migrated yet
	}
	return n
}

func TestRunOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var out harness.Buffer
	if err := run(context.Background(), []string{"-migrate", "-once", "-metrics-addr="}, b.getenv, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if got := b.total(t); got != b.added {
		t.Fatalf("total in Postgres = %d, want %d\n%s", got, b.added, out.String())
	}
	if !strings.Contains(out.String(), `"msg":"migration applied"`) || !strings.Contains(out.String(), `"flushes":3`) {
		t.Fatalf("logs:\n%s", out.String())
	}
}

func TestRunUntilCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out harness.Buffer
	done := make(chan error, 1)
	metrics := freeport.Addr(t)
	go func() {
		done <- run(ctx, []string{"-migrate", "-log-level", "debug", "-metrics-addr", metrics}, b.getenv, &out)
	}()

	poll.UntilState(t, 20*time.Second, "the counters flushed", func() (bool, string) { return b.total(t) == b.added, "\n" + out.String() })
	// Three shards, one closed minute and one metric each: three rows.
	metricstest.WaitFor(t, metrics, "nudge_flush_rows_total", 3)
	if v := metricstest.Value(t, metrics, "nudge_flush_last_success_timestamp_seconds"); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("nudge_flush_last_success_timestamp_seconds = %v", v)
	}
	// Ready: Redis and PostgreSQL both answer, each checked.
	if code, body := metricstest.Get(t, metrics, "/readyz"); code != 200 || !strings.Contains(body, "redis: ok") || !strings.Contains(body, "postgres: ok") {
		t.Errorf("/readyz = %d\n%s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !strings.Contains(out.String(), `"msg":"flusher stopped"`) {
		t.Fatalf("logs:\n%s", out.String())
	}
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	db := map[string]string{"NUDGE_DATABASE_URL": "postgres://x"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"no database", nil, nil},
		{"bad shards env", nil, map[string]string{"NUDGE_DATABASE_URL": "postgres://x", "NUDGE_SHARDS": "eight"}},
		{"zero shards", []string{"-shards", "0"}, db},
		{"bad interval env", nil, map[string]string{"NUDGE_DATABASE_URL": "postgres://x", "NUDGE_INTERVAL": "10"}},
		{"bad redis url", []string{"-redis-url", "http://x"}, db},
		{"bad cluster", []string{"-redis-cluster", "a,b"}, db},
		{"bad database url", []string{"-database-url", "postgres://x:y:z"}, nil},
		{"bad log level", []string{"-log-level", "loud"}, db},
		{"unknown flag", []string{"-fast"}, db},
		{"extra argument", []string{"now"}, db},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			if err := run(context.Background(), tt.args, env(tt.env), &out); !errors.Is(err, cli.ErrUsage) {
				t.Fatalf("run = %v, want a usage error", err)
			}
		})
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-database-url") {
		t.Fatalf("-h = %v\n%s", err, out.String())
	}
}
