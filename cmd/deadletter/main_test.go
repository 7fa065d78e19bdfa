package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

func TestMain(m *testing.M) { buildtest.Main(m) }

// sum adds up metric in the live counters of every shard.
func sum(t *testing.T, rdb *redis.Client, ks keys.Keyspace, metric string) int64 {
	t.Helper()
	ctx := context.Background()
	var n int64
	for s := range ks.Shards {
		mins, _ := rdb.ZRange(ctx, ks.CounterIndex(s), 0, -1).Result()
		for _, m := range mins {
			mm, _ := strconv.ParseInt(m, 10, 64)
			h, _ := rdb.HGetAll(ctx, ks.Counters(s, mm)).Result()
			for f, v := range h {
				if d, err := counters.ParseField(f); err == nil && d.Metric == metric {
					x, _ := strconv.ParseInt(v, 10, 64)
					n += x
				}
			}
		}
	}
	return n
}

// The way an operator meets bad input: a real ingest process dead-letters
// two entries; deadletter lists and shows them, refuses to replay the bad
// one as is or under another id, replays it fixed with its original id
// (ingest applies it, once: a producer's retry is a duplicate), and drops
// the other.
func TestDeadLettersThroughIngest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	ingest := exec.Command(buildtest.Command(t, "../ingest"), "-redis-url", "redis://"+redistest.Addr()+"/0",
		"-prefix", prefix, "-shards", "2", "-consumer", "c1", "-log-level", "error", "-reminders=false", "-metrics-addr=")
	ingest.Env = []string{"PATH=" + os.Getenv("PATH")}
	ingest.Stdout, ingest.Stderr = t.Output(), t.Output()
	if err := ingest.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ingest.Process.Kill(); _ = ingest.Wait() })

	p := producer.New(rdb, producer.Config{Keyspace: ks})
	bad := `{"v":1,"type":"message.sent","id":"evt-7","ts":1767225600000,"conversation":"c-42","message":"m-1","sender":"alice","recipients":"bob"}`
	if _, err := p.PublishRaw(ctx, "c-42", []byte(bad)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishRaw(ctx, "c-43", []byte(`not json at all`)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "two dead letters", func() bool { return sum(t, rdb, ks, counters.DeadLettered) == 2 })

	env := map[string]string{"NUDGE_REDIS_URL": "redis://" + redistest.Addr() + "/0", "NUDGE_PREFIX": prefix, "NUDGE_SHARDS": "2",
		"NUDGE_FILE": "/nonexistent"} // not a connection flag: ignored
	dl := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, args, func(k string) string { return env[k] }, &out)
		return out.String(), err
	}

	out, err := dl("list")
	if err != nil {
		t.Fatal(err)
	}
	var fieldName, jsonName string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case strings.Contains(line, "invalid_field"):
			fieldName = f[0]
		case strings.Contains(line, "invalid_json"):
			jsonName = f[0]
		}
	}
	if fieldName == "" || jsonName == "" || !strings.Contains(out, "2 shown of 2 dead letters") {
		t.Fatalf("deadletter list:\n%s", out)
	}
	if out, err := dl("list", "-reason", "invalid_json"); err != nil || strings.Contains(out, "invalid_field") || !strings.Contains(out, jsonName) {
		t.Errorf("deadletter list -reason invalid_json: %v\n%s", err, out)
	}

	out, err = dl("show", fieldName)
	if err != nil || !strings.Contains(out, "reason:     invalid_field") || !strings.Contains(out, `"recipients": "bob"`) ||
		!strings.Contains(out, "deliveries: 1") || !strings.Contains(out, "stream:     "+ks.Stream(ks.Shard("c-42"))) {
		t.Errorf("deadletter show %s: %v\n%s", fieldName, err, out)
	}

	// As stored, it is still bad.
	if _, err := dl("replay", fieldName); err == nil || !strings.Contains(err.Error(), "still bad") {
		t.Errorf("replay of a bad payload as is: %v", err)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	fixed := strings.Replace(bad, `"recipients":"bob"`, `"recipients":["bob"]`, 1)
	other := write("other.json", strings.Replace(fixed, `"evt-7"`, `"evt-8"`, 1))
	if _, err := dl("replay", "-file", other, fieldName); err == nil || !strings.Contains(err.Error(), `is not the dead letter's "evt-7"`) {
		t.Errorf("replay under another id: %v", err)
	}
	out, err = dl("replay", "-file", write("fixed.json", fixed), fieldName)
	if err != nil || !strings.Contains(out, "replayed "+fieldName+": event evt-7 (message.sent)") {
		t.Fatalf("replay of the fixed event: %v\n%s", err, out)
	}
	poll.Until(t, 20*time.Second, "the replayed message applied", func() bool { return sum(t, rdb, ks, counters.MessagesSent) == 1 })
	if _, err := dl("show", fieldName); err == nil || !strings.Contains(err.Error(), "no dead letter "+fieldName) {
		t.Errorf("show of a replayed dead letter: %v", err)
	}
	// A producer's retry of the same event is a duplicate, not a second
	// message.
	if _, err := p.PublishRaw(ctx, "c-42", []byte(fixed)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the retry counted a duplicate", func() bool { return sum(t, rdb, ks, counters.Duplicates) == 1 })
	if n := sum(t, rdb, ks, counters.MessagesSent); n != 1 {
		t.Errorf("messages_sent = %d after a retry, want 1", n)
	}

	if out, err := dl("drop", jsonName); err != nil || !strings.Contains(out, "dropped 1") {
		t.Errorf("drop: %v %s", err, out)
	}
	if _, err := dl("drop", jsonName); err == nil {
		t.Error("dropping a dead letter twice is no error")
	}
	if out, err := dl("list"); err != nil || !strings.Contains(out, "no dead letters") {
		t.Errorf("list after replay and drop: %v\n%s", err, out)
	}
}

// Typos get a clear error, never a crash.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	env := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "takes a command"},
		{[]string{"lsit"}, `unknown command "lsit"`},
		{[]string{"show"}, "takes one SHARD/ID"},
		{[]string{"show", "3-1767225600000-0"}, "is not SHARD/ID"},
		{[]string{"show", "9/1-0"}, "shard 9 is not one of 0 to 7"},
		{[]string{"drop"}, "takes SHARD/ID..."},
		{[]string{"list", "extra"}, "unexpected arguments"},
		{[]string{"list", "-limit", "0"}, "-limit must be at least 1"},
		{[]string{"list", "-shards", "0"}, "-shards must be at least 1"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, env, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("deadletter %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"list", "-h"}, env, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-reason") {
		t.Errorf("deadletter list -h: %v\n%s", err, out.String())
	}
}
