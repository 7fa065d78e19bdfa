package oracle

import (
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
)

func TestEpisodes(t *testing.T) {
	o := New(128)
	n := 0
	apply := func(e *event.Event, entry string) {
		n++
		e.V, e.ID = event.Version, "e"+string(rune('a'+n))
		o.ApplyEntry(e, entry)
	}
	msg := func(conv, m, sender string, to ...string) *event.Event {
		return &event.Event{Type: event.TypeMessage, Conversation: conv, Message: m, Sender: sender, Recipients: to}
	}
	read := func(conv, user, upTo string) *event.Event {
		return &event.Event{Type: event.TypeRead, Conversation: conv, User: user, UpTo: upTo}
	}
	apply(msg("c", "m1", "alice", "alice", "bob", "carol"), "1000-0") // opens bob's and carol's
	apply(msg("c", "m2", "alice", "bob"), "1001-0")                   // bob's stays open
	apply(read("c", "bob", "m1"), "1002-0")                           // partial: still open
	apply(read("c", "bob", ""), "1003-0")                             // closes bob's
	m3 := msg("c", "m3", "carol", "bob")
	apply(m3, "1004-0") // closes carol's, opens bob's second
	dup := &event.Event{V: event.Version, ID: m3.ID, Type: event.TypeRead, Conversation: "c", User: "bob"}
	o.ApplyEntry(dup, "1005-0") // the same id again: a duplicate, not applied

	want := []Episode{
		{Key: Key{"bob", "c"}, ID: "1000-0", Opened: time.UnixMilli(1000), CloseID: "1003-0", Closed: time.UnixMilli(1003)},
		{Key: Key{"carol", "c"}, ID: "1000-0", Opened: time.UnixMilli(1000), CloseID: "1004-0", Closed: time.UnixMilli(1004)},
		{Key: Key{"bob", "c"}, ID: "1004-0", Opened: time.UnixMilli(1004)},
	}
	got := o.Episodes()
	if len(got) != len(want) {
		t.Fatalf("%d episodes, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Key != w.Key || g.ID != w.ID || !g.Opened.Equal(w.Opened) || g.CloseID != w.CloseID || !g.Closed.Equal(w.Closed) {
			t.Errorf("episode %d = %+v, want %+v", i, g, w)
		}
	}
	if c := o.Counts(); c["episodes_opened"] != 3 || c["episodes_closed"] != 2 || c["duplicates"] != 1 {
		t.Errorf("counts %v", c)
	}
}

func TestEntryTime(t *testing.T) {
	if got := EntryTime("1767225600123-7"); !got.Equal(time.UnixMilli(1767225600123)) {
		t.Errorf("EntryTime = %v", got)
	}
	for _, id := range []string{"", "x-1", "123"} {
		if got := EntryTime(id); !got.IsZero() {
			t.Errorf("EntryTime(%q) = %v, want zero", id, got)
		}
	}
}

// A close converts the last stage pushed strictly before it was
// published, within the window; an open episode, one never pushed, one
// pushed in the same millisecond as its read, or too long before, none.
func TestConversions(t *testing.T) {
	base := time.UnixMilli(1767225600000)
	ep := func(closedAfter time.Duration) Episode {
		e := Episode{Key: Key{"bob", "c"}, ID: "1-0", Opened: base}
		if closedAfter > 0 {
			e.CloseID, e.Closed = "x", base.Add(closedAfter)
		}
		return e
	}
	pushes := [][]time.Duration{ // per episode, by stage: when recorded pushed (0: not)
		{10 * time.Second, 20 * time.Second}, // read at 25 s: stage 2, 5 s after
		{10 * time.Second, 30 * time.Second}, // read at 25 s: stage 1, 15 s after
		{10 * time.Second},                   // read at 10 s, the same millisecond: none
		{0, 0},                               // never pushed
		{10 * time.Second},                   // open
		{time.Second},                        // read 2 h later: none
		{time.Second},                        // read 59 min later: stage 1, in the last bucket below 1 h
	}
	eps := []Episode{ep(25 * time.Second), ep(25 * time.Second), ep(10 * time.Second), ep(25 * time.Second), ep(0),
		ep(2 * time.Hour), ep(time.Second + 59*time.Minute)}
	for i := range eps {
		eps[i].ID = strconv.Itoa(i)
	}
	conv, delays := Conversions(eps, 2, time.Hour, func(e Episode, s int) (time.Time, bool) {
		i, _ := strconv.Atoi(e.ID)
		if s > len(pushes[i]) || pushes[i][s-1] == 0 {
			return time.Time{}, false
		}
		return base.Add(pushes[i][s-1]), true
	})
	wantConv := map[string]int64{"1": 2, "2": 1}
	wantDelays := map[string]int64{"2:30": 1, "1:30": 1, "1:3600": 1}
	if !maps.Equal(conv, wantConv) || !maps.Equal(delays, wantDelays) {
		t.Errorf("Conversions = %v, %v; want %v, %v", conv, delays, wantConv, wantDelays)
	}
}
