package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/keys"
)

// badEntry is one stream entry of the bad-input corpus and the reason
// ingest must dead-letter it with.
type badEntry struct {
	name   string
	reason event.Reason
	// payload is the "event" field, published as is (producer.PublishRaw).
	payload []byte
	// fields, if set, are the entry's fields instead (no "event" field).
	fields []any
	// routing, if set, is the routing key of a valid event that is
	// published to the shard after its own.
	routing string
}

// badCorpus returns the bad-input corpus: the files under
// testdata/badinput/<reason>/, then the cases built here (sizes over the
// limits, entries without an "event" field, events on the wrong shard).
func badCorpus(t testing.TB) []badEntry {
	t.Helper()
	const dir = "testdata/badinput"
	reasons, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []badEntry
	for _, r := range reasons {
		files, err := os.ReadDir(filepath.Join(dir, r.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(dir, r.Name(), f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, badEntry{name: r.Name() + "/" + f.Name(), reason: event.Reason(r.Name()), payload: data})
		}
	}
	if len(out) < 50 {
		t.Fatalf("only %d files under %s", len(out), dir)
	}

	const head = `{"v":1,"id":"bad","ts":1767225600000,`
	message := func(extra string) []byte {
		return []byte(head + `"type":"message.sent","conversation":"c1","message":"m1","sender":"alice","recipients":["bob"]` + extra + `}`)
	}
	long := func(n int) string { return strings.Repeat("x", n) }
	junk := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	add := func(name string, reason event.Reason, payload []byte) {
		out = append(out, badEntry{name: name, reason: reason, payload: payload})
	}
	// Over the 64 KiB limit of a whole event.
	add("too_large/1MB-preview", event.ReasonTooLarge, message(`,"preview":"`+long(1<<20)+`"`))
	add("too_large/1MB-random-bytes", event.ReasonTooLarge, junk)
	add("too_large/1MB-recipients", event.ReasonTooLarge,
		[]byte(head+`"type":"message.sent","conversation":"c1","message":"m1","sender":"alice","recipients":[`+
			strings.TrimSuffix(strings.Repeat(`"bob",`, (1<<20)/6), ",")+`]}`))
	add("too_large/limit+1", event.ReasonTooLarge, func() []byte {
		p := message(`,"pad":"`)
		p = append(p, long(event.MaxEventBytes+1-len(p)-2)...)
		return append(p, `"}`...)
	}())
	// Huge strings within the event limit, over a field's.
	add("field_too_large/preview-60KB", event.ReasonFieldTooLarge, message(`,"preview":"`+long(60<<10)+`"`))
	add("field_too_large/preview-limit+1", event.ReasonFieldTooLarge, message(`,"preview":"`+strings.Repeat("é", event.MaxPreviewBytes/2)+`x"`))
	add("field_too_large/id-129", event.ReasonFieldTooLarge,
		[]byte(`{"v":1,"type":"presence","id":"`+long(event.MaxIDBytes+1)+`","ts":1767225600000,"user":"u1","status":"online"}`))
	add("field_too_large/recipient-129", event.ReasonFieldTooLarge,
		[]byte(head+`"type":"message.sent","conversation":"c1","message":"m1","sender":"alice","recipients":["bob","`+long(event.MaxIDBytes+1)+`"]}`))
	add("field_too_large/token-4097", event.ReasonFieldTooLarge,
		[]byte(head+`"type":"device.registered","user":"u1","platform":"fcm","token":"`+long(event.MaxTokenBytes+1)+`"}`))
	add("field_too_large/app-65", event.ReasonFieldTooLarge,
		[]byte(head+`"type":"presence","user":"u1","status":"online","app":"`+long(event.MaxAppBytes+1)+`"}`))
	// A huge string where a number belongs.
	add("invalid_field/ts-huge-number", event.ReasonInvalidField,
		[]byte(`{"v":1,"type":"presence","id":"bad","ts":1`+strings.Repeat("0", 4000)+`,"user":"u1","status":"online"}`))

	// Entries without an "event" field.
	good := `{"v":1,"type":"presence","id":"ok","ts":1767225600000,"user":"u1","status":"online"}`
	out = append(out,
		badEntry{name: "no_event_field/other-field", reason: ingest.ReasonNoEventField, fields: []any{"foo", "bar"}},
		badEntry{name: "no_event_field/capitalized", reason: ingest.ReasonNoEventField, fields: []any{"Event", good}},
		badEntry{name: "no_event_field/payload-field", reason: ingest.ReasonNoEventField, fields: []any{"payload", good, "v", "1"}},
		badEntry{name: "no_event_field/empty-name", reason: ingest.ReasonNoEventField, fields: []any{"", good}},
	)
	// Valid events on another shard than their routing key's.
	out = append(out,
		badEntry{name: "wrong_shard/read", reason: ingest.ReasonWrongShard, routing: "c-wrong",
			payload: []byte(`{"v":1,"type":"conversation.read","id":"x2","ts":1767225600000,"conversation":"c-wrong","user":"u"}`)},
		badEntry{name: "wrong_shard/presence", reason: ingest.ReasonWrongShard, routing: "u-wrong",
			payload: []byte(`{"v":1,"type":"presence","id":"x3","ts":1767225600000,"user":"u-wrong","status":"online"}`)},
	)
	return out
}

// xadd returns the XADD of a bad entry, on the shard of routingKey (the
// next shard for a wrong_shard entry), and that shard.
func (e badEntry) xadd(ks keys.Keyspace, routingKey string) (*redis.XAddArgs, int) {
	s := ks.Shard(routingKey)
	if e.routing != "" {
		s = (ks.Shard(e.routing) + 1) % ks.Shards
	}
	values := e.fields
	if values == nil {
		values = []any{ingest.EventField, e.payload}
	}
	return &redis.XAddArgs{Stream: ks.Stream(s), Values: values}, s
}

// Every entry of the bad-input corpus, interleaved with good events, goes
// to its shard's dead-letter stream with the expected reason and is
// counted (Redis counters, Prometheus, Stats); every good event is applied
// exactly once around them; nothing is left pending.
func TestBadInputGoesToDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	corpus := badCorpus(t)

	// Entry ids are unique per stream only: key them by shard too.
	bad := map[string]badEntry{} // "shard/entry id" -> what was published
	wantDead := map[event.Reason]int{}
	var messages, reads, presences int
	publishGood := func(i int) {
		switch i % 3 {
		case 0:
			b.publish(t, msg("c"+strconv.Itoa(i), "m"+strconv.Itoa(i), "alice", "bob", "carol"))
			messages++
		case 1:
			b.publish(t, read("c"+strconv.Itoa(i-1), "carol", "")) // the message just before
			reads++
		case 2:
			b.publish(t, presence("p"+strconv.Itoa(i), "online", "phone"))
			presences++
		}
	}
	// The first half of the corpus is a backlog when the consumer starts,
	// so its batches mix good and bad entries; the rest arrives live.
	reg := prometheus.NewRegistry()
	cfg := b.cfg
	cfg.Metrics = reg
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	var c *ingest.Consumer
	for i, e := range corpus {
		if i == len(corpus)/2 {
			c = b.start(t, cfg)
		}
		publishGood(i)
		var (
			id  string
			err error
			s   int
		)
		route := "route-" + strconv.Itoa(i) // spreads the entries over the shards
		if e.fields == nil && e.routing == "" {
			s = b.ks.Shard(route)
			id, err = b.pub.PublishRaw(ctx, route, e.payload)
		} else {
			var args *redis.XAddArgs
			args, s = e.xadd(b.ks, route)
			id, err = b.rdb.XAdd(ctx, args).Result()
		}
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		bad[strconv.Itoa(s)+"/"+id] = e
		wantDead[e.reason]++
	}
	publishGood(len(corpus))
	good := messages + reads + presences

	// Prometheus is updated last, after the stats and the script's counters.
	gather := func() (dead map[event.Reason]int, applied int) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		dead = map[event.Reason]int{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "nudge_ingest_dead_lettered_total":
					for _, l := range m.GetLabel() {
						if l.GetName() == "reason" {
							dead[event.Reason(l.GetValue())] += int(m.GetCounter().GetValue())
						}
					}
				case "nudge_ingest_events_applied_total":
					applied += int(m.GetCounter().GetValue())
				}
			}
		}
		return dead, applied
	}
	poll.Until(t, 30*time.Second, "every entry applied or dead-lettered", func() bool {
		dead, applied := gather()
		n := 0
		for _, x := range dead {
			n += x
		}
		return c.Stats().Applied.Load()+c.Stats().DeadLettered.Load() >= int64(good+len(bad)) && n+applied >= good+len(bad)
	})

	// Each bad entry is in its shard's dead-letter stream, once, with its
	// reason and what is needed to find and replay it.
	found := map[string]bool{}
	for s := 0; s < b.ks.Shards; s++ {
		dead, err := b.rdb.XRange(ctx, b.ks.DeadLetter(s), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range dead {
			v := func(f string) string { x, _ := m.Values[f].(string); return x }
			entry := strconv.Itoa(s) + "/" + v("entry")
			want, ok := bad[entry]
			if !ok {
				t.Errorf("shard %d: unexpected dead letter %v", s, m.Values)
				continue
			}
			if found[entry] {
				t.Errorf("%s: dead-lettered twice", want.name)
			}
			found[entry] = true
			if v("stream") != b.ks.Stream(s) {
				t.Errorf("%s: in the dead letters of shard %d, from stream %q", want.name, s, v("stream"))
			}
			if v("reason") != string(want.reason) {
				t.Errorf("%s: reason %q (%s), want %q", want.name, v("reason"), v("detail"), want.reason)
			}
			if v("detail") == "" || v("consumer") != cfg.Consumer || v("deliveries") != "1" || v("at") == "" {
				t.Errorf("%s: dead letter %q", want.name, m.Values)
			}
			payload := v("payload")
			switch {
			case want.fields != nil:
				if !strings.Contains(payload, fmt.Sprintf("%v=", want.fields[0])) {
					t.Errorf("%s: payload %q does not show the entry's fields %v", want.name, payload, want.fields)
				}
			case len(ingest.RedactTokens(string(want.payload))) > event.MaxEventBytes:
				if payload != ingest.RedactTokens(string(want.payload))[:event.MaxEventBytes] || !strings.Contains(v("detail"), "truncated to") {
					t.Errorf("%s: payload of %d bytes, detail %q: want the first %d bytes and a note", want.name, len(payload), v("detail"), event.MaxEventBytes)
				}
			default:
				// The entry's payload, its device tokens redacted.
				if payload != ingest.RedactTokens(string(want.payload)) {
					t.Errorf("%s: payload %q, want the entry's %q, tokens redacted", want.name, clipped(payload), clipped(string(want.payload)))
				}
			}
			if want.reason == ingest.ReasonWrongShard && !strings.Contains(v("detail"), "belongs to shard") {
				t.Errorf("%s: detail %q", want.name, v("detail"))
			}
		}
	}
	for id, e := range bad {
		if !found[id] {
			t.Errorf("%s (shard/entry %s): not in its shard's dead letters", e.name, id)
		}
	}

	// Counted by reason, in the Redis counters and in Prometheus.
	gotDead := map[event.Reason]int{}
	for f, n := range b.totals(t) {
		if d, err := counters.ParseField(f); err == nil && d.Metric == counters.DeadLettered {
			gotDead[event.Reason(d.Reason)] += int(n)
		}
	}
	promDead, promApplied := gather()
	for r, n := range wantDead {
		if gotDead[r] != n || promDead[r] != n {
			t.Errorf("dead letters %q: counter %d, metric %d, want %d", r, gotDead[r], promDead[r], n)
		}
	}
	if len(gotDead) != len(wantDead) || len(promDead) != len(wantDead) {
		t.Errorf("dead-letter reasons: counters %v, metric %v, want %v", gotDead, promDead, wantDead)
	}
	if got := c.Stats().DeadLettered.Load(); got != int64(len(bad)) {
		t.Errorf("Stats().DeadLettered %d, want %d", got, len(bad))
	}

	// The good events, each applied once.
	for metric, want := range map[string]int{
		counters.EventsApplied: good, counters.MessagesSent: messages, counters.RecipientsFanned: 2 * messages,
		counters.Reads: reads, counters.PresenceEvents: presences, counters.Duplicates: 0,
	} {
		if got := b.metric(t, metric); got != int64(want) {
			t.Errorf("%s = %d, want %d", metric, got, want)
		}
	}
	if got := c.Stats().Applied.Load(); got != int64(good) || promApplied != good {
		t.Errorf("applied: Stats %d, metric %v, want %d", got, promApplied, good)
	}
	if got := c.Stats().Errors.Load(); got != 0 {
		t.Errorf("%d failed apply attempts: bad input must not fail a batch", got)
	}
	if got, want := b.badge(t, "bob"), int64(messages); got != want {
		t.Errorf("bob's badge %d, want %d", got, want)
	}
	if got, want := b.badge(t, "carol"), int64(messages-reads); got != want {
		t.Errorf("carol's badge %d, want %d", got, want)
	}
	if p := b.pendingTotal(t, "nudge-ingest"); p != 0 {
		t.Errorf("%d entries still pending", p)
	}
	t.Logf("%d bad entries (%d reasons) and %d good events", len(bad), len(wantDead), good)
}

func clipped(s string) string {
	if len(s) > 80 {
		return s[:80] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// A dead-lettered device event keeps its device token out of the
// dead-letter stream, as logs do: a short prefix and the length only.
func TestDeadLetterRedactsTokens(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)
	token := strings.Repeat("d7f3a1c9", 8)
	raw := `{"v":1,"type":"device.registered","id":"dev-1","ts":1767225600000,"user":"bob","platform":"pager","token":"` + token + `"}`
	if _, err := b.pub.PublishRaw(context.Background(), "bob", []byte(raw)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the event dead-lettered", func() bool { return len(b.deadLetters(t)) == 1 })
	for s := 0; s < b.ks.Shards; s++ {
		msgs, _ := b.rdb.XRange(context.Background(), b.ks.DeadLetter(s), "-", "+").Result()
		for _, m := range msgs {
			payload := fmt.Sprint(m.Values["payload"])
			if strings.Contains(payload, token[:12]) || !strings.Contains(payload, `"token":"d7f3a1…(64)"`) {
				t.Errorf("dead-letter payload %s: want the token redacted to d7f3a1…(64)", payload)
			}
		}
	}
}
