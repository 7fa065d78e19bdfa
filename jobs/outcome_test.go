package jobs

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

func TestOutcomeMember(t *testing.T) {
	at := time.UnixMilli(1767225600123)
	for _, o := range []Outcome{
		{Metric: counters.RemindersSent, At: at},
		{Metric: counters.RemindersSuppr, Reason: ReasonMentionsOnly, At: at},
	} {
		got, ok := ParseOutcome(o.member())
		if !ok || got.Metric != o.Metric || got.Reason != o.Reason || !got.At.Equal(o.At) {
			t.Errorf("ParseOutcome(%q) = %+v, %v; want %+v", o.member(), got, ok, o)
		}
	}
	for _, m := range []string{doneMember, tokenDigest("fcm", "tok"), "!outcome:", "!outcome:x:y", "!outcome::r:1", "!outcome:m:r:z"} {
		if o, ok := ParseOutcome(m); ok {
			t.Errorf("ParseOutcome(%q) = %+v, want not an outcome", m, o)
		}
	}
}

// A reminder finished twice (a task run again, two workers racing) keeps
// the first outcome and is counted once: the second call adds no outcome
// member beside the first, and counts nothing.
func TestFinishingTwiceKeepsTheFirstOutcome(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := redistest.New(t)
	cfg, err := Config{Keyspace: keys.New(prefix, 2)}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	startMinute := keys.Minute(time.Now())
	r := Reminder{Shard: 1, App: "chat", User: "u1", Conversation: "c1", Episode: "1-0", Stage: 1}
	first := finishing{r: r, metric: counters.RemindersSent}
	second := finishing{r: r, metric: counters.RemindersSuppr, reason: ReasonMuted}
	// The first call finishes it twice in the same millisecond (one
	// script, one time); the later ones finish it again, the same way and
	// another, a few milliseconds on.
	for i, fs := range [][]finishing{{first, first}, {second}, {first}} {
		done, err := finishAll(ctx, rdb, cfg, fs)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[i == 0]; len(done) != want {
			t.Errorf("call %d finished %d reminders, want %d", i+1, len(done), want)
		}
		time.Sleep(2 * time.Millisecond) // a later outcome member than the first's
	}
	members, err := rdb.SMembers(ctx, cfg.Keyspace.Sent(1, r.ID())).Result()
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []Outcome
	for _, m := range members {
		if o, ok := ParseOutcome(m); ok {
			outcomes = append(outcomes, o)
		}
	}
	if len(outcomes) != 1 || outcomes[0].Metric != counters.RemindersSent {
		t.Errorf("outcomes %+v (members %v), want the first one alone", outcomes, members)
	}
	var counted int64
	for _, minute := range slices.Compact([]int64{startMinute, keys.Minute(time.Now())}) {
		for f, v := range rdb.HGetAll(ctx, cfg.Keyspace.Counters(1, minute)).Val() {
			if strings.HasPrefix(f, counters.RemindersSent+"|") || strings.HasPrefix(f, counters.RemindersSuppr+"|") {
				n, _ := strconv.ParseInt(v, 10, 64)
				counted += n
			}
		}
	}
	if counted != 1 {
		t.Errorf("counted %d outcomes, want 1", counted)
	}
}

// A pushed reminder's sent set has a TTL however the record finds it: the
// claim's, when its intents are all there; its own, when the set was lost
// between the claim and the record and the record makes it again.
func TestRecordLeavesTheSentSetWithATTL(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := redistest.New(t)
	w, err := NewWorker(rdb, nil, nil, nil, Config{Keyspace: keys.New(prefix, 2)})
	if err != nil {
		t.Fatal(err)
	}
	dev := registry.Device{Platform: push.PlatformFCM, Token: "tok"}
	for _, c := range []struct {
		name string
		lost bool
	}{{"intents kept", false}, {"set lost after the claim", true}} {
		r := Reminder{Shard: 1, App: "chat", User: "u1", Conversation: c.name, Episode: "1-0", Stage: 1}
		s := &sending{r: r, devices: []registry.Device{dev}, targets: []target{{platform: dev.Platform, key: "fcm"}}}
		if err := w.claim(ctx, []*sending{s}); err != nil {
			t.Fatal(err)
		}
		key := w.sentKey(r)
		if c.lost {
			rdb.Del(ctx, key)
		}
		s.results = []deviceResult{{dev.Platform, push.Result{Token: dev.Token, Outcome: push.Delivered}}}
		if err := w.record(ctx, []*sending{s}); err != nil {
			t.Fatal(err)
		}
		if !rdb.SIsMember(ctx, key, tokenDigest(dev.Platform, dev.Token)).Val() {
			t.Errorf("%s: the push is not recorded: %v", c.name, rdb.SMembers(ctx, key).Val())
		}
		if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > w.cfg.SentTTL {
			t.Errorf("%s: sent set TTL %v, want up to %v", c.name, ttl, w.cfg.SentTTL)
		}
	}
}
