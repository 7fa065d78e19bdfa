package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

func TestPublishNDJSONAndArray(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 4)
	env := func(k string) string {
		switch k {
		case "NUDGE_PREFIX":
			return prefix
		case "NUDGE_SHARDS":
			return "4"
		case "NUDGE_REDIS_URL":
			return "redis://" + redistest.Addr() + "/0"
		}
		return ""
	}
	ndjson := `{"v":1,"type":"presence","id":"e1","ts":1767225600000,"user":"bob","status":"online"}

{"v":1,"type":"message.sent","id":"e2","ts":1767225600000,"conversation":"c1","message":"m1","sender":"a","recipients":["bob"]}
`
	var out bytes.Buffer
	if err := run(context.Background(), nil, env, strings.NewReader(ndjson), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "published 2 events") {
		t.Errorf("output %q", out.String())
	}
	if n := rdb.XLen(context.Background(), ks.Stream(ks.Shard("bob"))).Val(); n < 1 {
		t.Errorf("bob's shard has %d entries", n)
	}
	if n := rdb.XLen(context.Background(), ks.Stream(ks.Shard("c1"))).Val(); n < 1 {
		t.Errorf("c1's shard has %d entries", n)
	}

	array := `[{"v":1,"type":"presence","id":"e3","ts":1767225600000,"user":"carol","status":"offline"}]`
	out.Reset()
	if err := run(context.Background(), nil, env, strings.NewReader(array), &out); err != nil || !strings.Contains(out.String(), "published 1 event\n") {
		t.Fatalf("array: %v %q", err, out.String())
	}
}

func TestPublishRejectsInvalidBeforePublishing(t *testing.T) {
	t.Parallel()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	env := func(k string) string {
		switch k {
		case "NUDGE_PREFIX":
			return prefix
		case "NUDGE_REDIS_URL":
			return "redis://" + redistest.Addr() + "/0"
		}
		return ""
	}
	in := `{"v":1,"type":"presence","id":"e1","ts":1767225600000,"user":"bob","status":"online"}
{"v":1,"type":"presence","id":"e2","ts":1767225600000,"user":"bob","status":"sleepy"}`
	err := run(context.Background(), []string{"-shards", "2"}, env, strings.NewReader(in), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "event 2") || !strings.Contains(err.Error(), "status") {
		t.Fatalf("error %v, want one naming event 2 and its status", err)
	}
	for s := 0; s < 2; s++ {
		if n := rdb.XLen(context.Background(), ks.Stream(s)).Val(); n != 0 {
			t.Errorf("shard %d has %d entries after a rejected file", s, n)
		}
	}
	// -raw publishes bad input as is, for dead-letter tests.
	if err := run(context.Background(), []string{"-shards", "2", "-raw", "-key", "bob"}, env, strings.NewReader("{not json\n"), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(context.Background(), ks.Stream(ks.Shard("bob"))).Val(); n != 1 {
		t.Errorf("raw: %d entries", n)
	}
}
