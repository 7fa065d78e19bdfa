package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// setup returns an environment pointing run at the test Redis under a
// fresh prefix, and the keyspace it writes to.
func setup(t *testing.T) (func(string) string, keys.Keyspace) {
	t.Helper()
	_, prefix := redistest.New(t)
	env := map[string]string{
		"NUDGE_REDIS_URL": "redis://" + redistest.Addr() + "/0",
		"NUDGE_PREFIX":    prefix,
		"NUDGE_SHARDS":    "4",
	}
	return func(k string) string { return env[k] }, keys.New(prefix, 4)
}

type summary struct {
	Events      int64            `json:"events"`
	Setup       int64            `json:"setup"`
	ByType      map[string]int64 `json:"by_type"`
	Bad         int64            `json:"bad"`
	BadByReason map[string]int64 `json:"bad_by_reason"`
	EventsPerS  float64          `json:"events_per_s"`
}

func TestRunJSONAndRecord(t *testing.T) {
	t.Parallel()
	env, ks := setup(t)
	record := filepath.Join(t.TempDir(), "events.ndjson")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-users", "200", "-conversations", "40", "-total", "2000",
		"-bad-rate", "0.05", "-group-fraction", "0", "-apps", "chat, team", "-record", record, "-json"},
		env, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("stdout is not the JSON summary: %v\n%s", err, stdout.String())
	}
	if s.Events != 2000+s.Setup || s.Bad == 0 || len(s.BadByReason) == 0 || s.EventsPerS <= 0 {
		t.Errorf("summary %+v", s)
	}
	f, err := os.Open(record)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := int64(0)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines++
		e, err := event.Decode(sc.Bytes())
		if err != nil {
			t.Fatalf("record line %d: %v", lines, err)
		}
		if e.App != "chat" && e.App != "team" {
			t.Fatalf("record line %d: app %q", lines, e.App)
		}
		if e.Type == event.TypeMessage && !strings.HasPrefix(e.Conversation, "d") {
			t.Fatalf("-group-fraction 0 drew group %s", e.Conversation)
		}
	}
	if lines != s.Events-s.Bad {
		t.Errorf("record has %d lines, want %d", lines, s.Events-s.Bad)
	}
	rdb, _ := redistest.New(t)
	var entries int64
	for sh := range ks.Shards {
		entries += rdb.XLen(context.Background(), ks.Stream(sh)).Val()
	}
	if entries != s.Events {
		t.Errorf("streams hold %d entries, summary says %d", entries, s.Events)
	}
}

func TestRunProgressAndSummary(t *testing.T) {
	t.Parallel()
	env, _ := setup(t)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-users", "300", "-conversations", "50", "-rate", "2000",
		"-duration", "400ms", "-progress", "100ms"}, env, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "ev/s") || !strings.Contains(lines[0], "msg ") {
		t.Errorf("progress on stderr:\n%s", stderr.String())
	}
	for _, want := range []string{"published ", "message.sent", "duplicates", "reads pending"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestRunRejectsBadSettings(t *testing.T) {
	t.Parallel()
	env, _ := setup(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-zipf-s", "0.5"}, "ZipfS"},
		{[]string{"-apps", "a b"}, "app"},
		{[]string{"-start", "yesterday"}, "-start"},
		{[]string{"-redis-url", "http://x"}, "-redis-url"},
		{[]string{"-nope"}, "nope"},
		{[]string{"extra"}, "unexpected"},
	} {
		err := run(context.Background(), tc.args, env, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
	// The environment sets flags too.
	bad := func(k string) string {
		if k == "NUDGE_RATE" {
			return "fast"
		}
		return env(k)
	}
	if err := run(context.Background(), nil, bad, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "NUDGE_RATE") {
		t.Errorf("NUDGE_RATE=fast: %v", err)
	}
}
