// Package oracle computes, independently of Redis and the apply script,
// the unread state and the counts a sequence of events must produce. Tests
// and the chaos run compare Nudge's state with it. Given the stream entry
// ids of the events (ApplyEntry), it also tracks every unread episode from
// the message that opened it to the event that closed it.
package oracle

import (
	"strconv"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/streamid"
	"github.com/nudgehq/nudge/keys"
)

// Key is a (user, conversation) pair, under their scoped names
// (keys.Scope with the default app event.DefaultApp): the apps of one
// deployment never share one.
type Key struct{ User, Conversation string }

// Episode is an unread episode: it opens with the first message a user has
// not read in a conversation and closes when the user reads the
// conversation up to its last message or writes to it.
type Episode struct {
	Key
	// ID is the stream entry id of the message that opened the episode:
	// ingest's episode id. Empty for events applied without one (Apply).
	ID string
	// Opened is when that message was published: the time of its entry id.
	Opened time.Time
	// CloseID is the entry id of the read or message that closed the
	// episode, and Closed its time; empty and zero while it is open.
	CloseID string
	Closed  time.Time
}

// EntryTime returns the time of a stream entry id ("<unix ms>-<seq>"): when
// Redis added the entry. The zero time if id is not an entry id.
func EntryTime(id string) time.Time {
	x, ok := streamid.Parse(id)
	if !ok {
		return time.Time{}
	}
	return x.Time()
}

// Oracle applies events in stream order. The zero value is not usable:
// call New.
type Oracle struct {
	cap      int
	recent   map[string][]string // conversation -> message ids, newest first
	n        map[Key]int
	last     map[Key]string
	seen     map[string]bool
	counts   map[string]int64 // metric -> count
	episodes []Episode        // in the order they opened
	open     map[Key]int      // index in episodes of each open episode
	opened   map[string]bool  // reminders opened: user|episode|stage
}

// New returns an Oracle that remembers recentCap message ids per
// conversation, as ingest's RecentMessages does (ingest keeps between cap
// and 2 cap, trimming back to cap when a list passes 2 cap).
func New(recentCap int) *Oracle {
	return &Oracle{cap: recentCap, recent: map[string][]string{}, n: map[Key]int{}, last: map[Key]string{},
		seen: map[string]bool{}, counts: map[string]int64{}, open: map[Key]int{}, opened: map[string]bool{}}
}

// Apply applies one event; a repeated event id is counted as a duplicate.
func (o *Oracle) Apply(e *event.Event) { o.ApplyEntry(e, "") }

// ApplyEntry applies one event published as stream entry id entry, which
// names and dates the episodes it opens or closes.
func (o *Oracle) ApplyEntry(e *event.Event, entry string) {
	e = scoped(e)
	if o.seen[e.ID] {
		o.counts["duplicates"]++
		return
	}
	o.seen[e.ID] = true
	o.counts["events_applied"]++
	switch e.Type {
	case event.TypeMessage:
		o.counts["messages_sent"]++
		r := append([]string{e.Message}, o.recent[e.Conversation]...)
		if len(r) > 2*o.cap {
			r = r[:o.cap]
		}
		o.recent[e.Conversation] = r
		o.close(Key{e.Sender, e.Conversation}, entry)
		for _, u := range e.Recipients {
			if u == e.Sender {
				continue
			}
			o.counts["recipients"]++
			if contains(e.Mentions, u) {
				o.counts["mentions"]++
			}
			k := Key{u, e.Conversation}
			if o.n[k] == 0 {
				o.counts["episodes_opened"]++
				o.open[k] = len(o.episodes)
				o.episodes = append(o.episodes, Episode{Key: k, ID: entry, Opened: EntryTime(entry)})
			}
			o.n[k]++
			o.last[k] = e.Message
		}
	case event.TypeRead:
		o.counts["reads"]++
		k := Key{e.User, e.Conversation}
		n, ok := o.n[k]
		if !ok {
			return
		}
		if e.UpTo == "" || e.UpTo == o.last[k] {
			o.close(k, entry)
			return
		}
		pos := -1
		for i, m := range o.recent[e.Conversation] {
			if m == e.UpTo {
				pos = i
				break
			}
		}
		switch {
		case pos < 0 && len(o.recent[e.Conversation]) >= o.cap:
		case pos > 0:
			o.n[k] = min(n, pos)
		default:
			o.close(k, entry)
		}
	case event.TypePresence:
		o.counts["presence_events"]++
	case event.TypeDeviceRegistered, event.TypeDeviceRemoved:
		o.counts["device_events"]++
	case event.TypePrefs:
		o.counts["prefs_events"]++
	case event.TypeOpened:
		o.counts["opened_events"]++
		if k := e.User + "|" + e.Episode + "|" + strconv.Itoa(e.Stage); !o.opened[k] {
			o.opened[k] = true
			o.counts["reminders_opened"]++
		}
	}
}

// scoped returns a copy of e with its ids under their scoped names.
func scoped(e *event.Event) *event.Event {
	if e.App == event.DefaultApp || e.App == "" {
		return e
	}
	sc := func(id string) string { return keys.Scope(e.App, event.DefaultApp, id) }
	c := *e
	c.ID, c.Conversation, c.Sender, c.User = sc(e.ID), sc(e.Conversation), sc(e.Sender), sc(e.User)
	c.Recipients = make([]string, len(e.Recipients))
	for i, r := range e.Recipients {
		c.Recipients[i] = sc(r)
	}
	c.Mentions = make([]string, len(e.Mentions))
	for i, m := range e.Mentions {
		c.Mentions[i] = sc(m)
	}
	return &c
}

func (o *Oracle) close(k Key, entry string) {
	if _, ok := o.n[k]; ok {
		delete(o.n, k)
		o.counts["episodes_closed"]++
		ep := &o.episodes[o.open[k]]
		ep.CloseID, ep.Closed = entry, EntryTime(entry)
		delete(o.open, k)
	}
}

// Episodes returns every episode so far, open or closed, in the order they
// opened.
func (o *Oracle) Episodes() []Episode { return o.episodes }

// Unread returns the unread count of every (user, conversation) with any.
func (o *Oracle) Unread() map[Key]int { return o.n }

// Badges returns each user's total unread.
func (o *Oracle) Badges() map[string]int {
	b := map[string]int{}
	for k, n := range o.n {
		b[k.User] += n
	}
	return b
}

// Counts returns the expected total of each ingest metric.
func (o *Oracle) Counts() map[string]int64 { return o.counts }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Conversions returns the reminders the closes of eps converted, by
// counter reason: "<stage>" for reminders_converted and "<stage>:<bucket>"
// for reminder_read_seconds (counters.ReadDelayBucket). A closed episode
// converts the last of its stages 1..stages that pushed (pushedAt: when
// its push was recorded) strictly before the event closing it was
// published, if that was within window of it. The times compared are those
// ingest compares: entry ids and the worker's outcome times, both the
// shard's Redis clock.
func Conversions(eps []Episode, stages int, window time.Duration,
	pushedAt func(ep Episode, stage int) (time.Time, bool)) (converted, delays map[string]int64) {
	converted, delays = map[string]int64{}, map[string]int64{}
	for _, ep := range eps {
		if ep.CloseID == "" {
			continue
		}
		last, at := 0, time.Time{}
		for s := 1; s <= stages; s++ {
			if t, ok := pushedAt(ep, s); ok && t.Before(ep.Closed) {
				last, at = s, t
			}
		}
		if d := ep.Closed.Sub(at); last > 0 && d <= window {
			converted[strconv.Itoa(last)]++
			delays[strconv.Itoa(last)+":"+strconv.Itoa(counters.ReadDelayBucket(d))]++
		}
	}
	return converted, delays
}
