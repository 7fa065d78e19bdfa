package keys_test

import (
	"testing"

	"github.com/nudgehq/nudge/keys"
)

var sink string

// BenchmarkShard measures the shard function on routing keys of typical
// lengths: ingest calls it once per entry (the wrong-shard check), a
// producer once per event.
func BenchmarkShard(b *testing.B) {
	ks := keys.New("nudge", 8)
	for _, tt := range []struct{ name, key string }{
		{"conversation", "grp-engineering-berlin"},
		{"user", "user-9052"},
		{"id-128B", "c" + string(make([]byte, 127))},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n += ks.Shard(tt.key)
			}
			if n < 0 {
				b.Fatal(n)
			}
		})
	}
}

// BenchmarkKeys measures building each kind of key on the ingest hot path:
// the per-batch keys of apply.lua (stream, lease, seen, counters, indexes,
// dead letters) and the per-event keys (conversation, recent, episode and
// badge per recipient, presence, active users).
func BenchmarkKeys(b *testing.B) {
	ks := keys.New("nudge", 8)
	const (
		shard = 5
		conv  = "grp-engineering-berlin"
		user  = "user-9052"
	)
	for _, tt := range []struct {
		name string
		key  func() string
	}{
		// Per batch.
		{"Stream", func() string { return ks.Stream(shard) }},
		{"Lease", func() string { return ks.Lease(shard) }},
		{"Seen", func() string { return ks.Seen(shard, 2945376) }},
		{"Counters", func() string { return ks.Counters(shard, 29453760) }},
		{"CounterIndex", func() string { return ks.CounterIndex(shard) }},
		{"ActiveUsersIndex", func() string { return ks.ActiveUsersIndex(shard) }},
		{"DeadLetter", func() string { return ks.DeadLetter(shard) }},
		// Per event, and per recipient for Episode and Badge.
		{"Conversation", func() string { return ks.Conversation(shard, conv) }},
		{"Recent", func() string { return ks.Recent(shard, conv) }},
		{"Episode", func() string { return ks.Episode(shard, user, conv) }},
		{"Badge", func() string { return ks.Badge(shard, user) }},
		{"Presence", func() string { return ks.Presence(shard, user) }},
		{"ActiveUsers", func() string { return ks.ActiveUsers(shard, "20260101", "chat") }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = tt.key()
			}
		})
	}
}

// BenchmarkMessageKeys builds every key apply.lua needs for one message
// event with 10 recipients (5 + 2 per recipient), in a keys slice as
// ingest does: a per-event figure for the key work of the hot path.
func BenchmarkMessageKeys(b *testing.B) {
	ks := keys.New("nudge", 8)
	const conv, sender, app, day = "grp-engineering-berlin", "user-4711", "chat", "20260101"
	rcpt := []string{"user-9052", "user-1138", "user-2187", "user-3263", "user-5150",
		"user-6502", "user-7474", "user-8080", "user-9000", "user-1024"}
	kk := make([]string, 0, 5+2*len(rcpt))
	b.ReportAllocs()
	for b.Loop() {
		shard := ks.Shard(conv)
		kk = append(kk[:0], ks.Conversation(shard, conv), ks.Recent(shard, conv),
			ks.Episode(shard, sender, conv), ks.Badge(shard, sender), ks.ActiveUsers(shard, day, app))
		for _, r := range rcpt {
			kk = append(kk, ks.Episode(shard, r, conv), ks.Badge(shard, r))
		}
	}
	sink = kk[len(kk)-1]
}
