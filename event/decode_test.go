package event_test

import (
	"errors"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/event"
)

// Validate drops repeated recipients and mentions, keeps the first order,
// and leaves the caller's slice as it was.
func TestValidateDeduplicatesRecipients(t *testing.T) {
	t.Parallel()
	many := func(n int, repeat bool) []string {
		var out []string
		for i := 0; i < n; i++ {
			out = append(out, "u"+strconv.Itoa(i))
			if repeat && i%3 == 0 {
				out = append(out, "u0")
			}
		}
		return out
	}
	for _, in := range [][]string{
		{"a"}, {"a", "a"}, {"a", "b"}, {"a", "b", "a"}, {"a", "a", "b"}, {"b", "a", "a", "c", "b", "d"},
		many(16, false), many(12, true), many(17, false), many(40, true),
	} {
		orig := slices.Clone(in)
		var want []string
		for _, id := range in {
			if !slices.Contains(want, id) {
				want = append(want, id)
			}
		}
		e := &event.Event{V: 1, Type: event.TypeMessage, ID: "e", TS: 1767225600000, Conversation: "c",
			Message: "m", Sender: "s", Recipients: in, Mentions: in}
		if err := event.Validate(e); err != nil {
			t.Fatalf("Validate(%v): %v", in, err)
		}
		if !slices.Equal(e.Recipients, want) || !slices.Equal(e.Mentions, want) {
			t.Errorf("recipients %v, mentions %v of %v; want %v", e.Recipients, e.Mentions, in, want)
		}
		if !slices.Equal(in, orig) {
			t.Errorf("Validate changed the caller's slice to %v, was %v", in, orig)
		}
	}
}

// DecodeString decides as Decode does, and says the same of an event over
// the size limit, which it rejects without copying it.
func TestDecodeStringMatchesDecode(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		okMessage,
		`{"v":1,"type":"presence","id":"e","ts":1767225600000,"user":"u","status":"online"}`,
		`{"v":1,"type":"presence"`,
		`{"v":1,"preview":"` + strings.Repeat("x", event.MaxEventBytes) + `"}`,
		strings.Repeat("x", 1<<20),
	} {
		want, wantErr := event.Decode([]byte(in))
		got, err := event.DecodeString(in)
		var e1, e2 *event.Error
		if (wantErr == nil) != (err == nil) || err != nil && (!errors.As(err, &e2) || !errors.As(wantErr, &e1) || *e1 != *e2) {
			t.Errorf("DecodeString: %v, Decode: %v", err, wantErr)
		}
		if err == nil && !(got.ID == want.ID && got.Type == want.Type && slices.Equal(got.Recipients, want.Recipients)) {
			t.Errorf("DecodeString %+v, Decode %+v", got, want)
		}
	}
}

// Ingest decodes stream fields with DecodeString: an oversized entry must
// not cost a copy of itself (not parallel: it counts the bytes allocated).
func TestDecodeStringDoesNotCopyOversizedEvents(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		if _, err := event.DecodeString(big); event.ReasonOf(err) != event.ReasonTooLarge {
			t.Fatalf("DecodeString of 1 MB: %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("10 rejections of a 1 MB event allocated %d bytes", n)
	}
}
