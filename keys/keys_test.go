package keys_test

import (
	"strings"
	"testing"

	"github.com/nudgehq/nudge/keys"
)

// The shard function is part of the producer contract (docs/events.md):
// CRC-32/IEEE mod N, the same as PHP's crc32() and Node's zlib.crc32().
func TestShardMatchesTheContract(t *testing.T) {
	t.Parallel()
	ks := keys.New("", 0)
	for key, want := range map[string]int{"c-42": 5, "bob": 0} {
		if got := ks.Shard(key); got != want {
			t.Errorf("Shard(%q) = %d, want %d", key, got, want)
		}
	}
	if ks.Prefix != "nudge" || ks.Shards != 8 {
		t.Errorf("defaults %+v", ks)
	}
}

// Every key of a shard carries the shard's hash tag, so one script's keys
// are in one Redis Cluster slot.
func TestShardKeysShareTheHashTag(t *testing.T) {
	t.Parallel()
	ks := keys.New("p", 16)
	for s := 0; s < 16; s++ {
		want := "p:{s" + itoa(s) + "}:"
		for _, k := range []string{ks.Stream(s), ks.DeadLetter(s), ks.Lease(s), ks.Seen(s, 1), ks.Episode(s, "u", "c"),
			ks.Badge(s, "u"), ks.Conversation(s, "c"), ks.Recent(s, "c"), ks.Presence(s, "u"), ks.Counters(s, 1),
			ks.CounterIndex(s), ks.Snapshot(s, "f"), ks.SnapshotIndex(s), ks.ActiveUsers(s, "20260101", "a"),
			ks.ActiveUsersIndex(s), ks.Sent(s, "r"), ks.RateLimit(s, "u", 1), ks.SendLock(s, "u"), ks.Outbox(s), ks.RegistryOutbox(s), ks.Chunk(s, "1-0"), ks.Opened(s, "u", "1-0", 1)} {
			if !strings.HasPrefix(k, want) {
				t.Errorf("key %q lacks %q", k, want)
			}
		}
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// A scoped name keeps the default app's ids as they are (data written
// before apps were isolated), puts every other app's under its own name,
// and never moves an id to another shard.
func TestScopeIsolatesAppsAndKeepsTheShard(t *testing.T) {
	t.Parallel()
	ks := keys.New("", 0)
	for _, tc := range []struct{ app, id, want string }{
		{"default", "bob", "bob"},
		{"", "bob", "bob"},
		{"chat", "bob", "chat/bob"},
		{"chat", "", ""},
	} {
		got := keys.Scope(tc.app, "default", tc.id)
		if got != tc.want {
			t.Errorf("Scope(%q, default, %q) = %q, want %q", tc.app, tc.id, got, tc.want)
		}
		app, id := keys.Unscope(got)
		if id != tc.id || (app != "" && app != tc.app) {
			t.Errorf("Unscope(%q) = %q, %q", got, app, id)
		}
		if ks.Shard(got) != ks.Shard(tc.id) {
			t.Errorf("Shard(%q) = %d, Shard(%q) = %d", got, ks.Shard(got), tc.id, ks.Shard(tc.id))
		}
	}
	if keys.Scope("chat", "chat", "bob") != "bob" {
		t.Error("the configured default app is not scoped")
	}
	if keys.Scope("a", "default", "bob") == keys.Scope("b", "default", "bob") {
		t.Error("two apps share a name")
	}
}
