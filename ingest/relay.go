package ingest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/keys"
)

// The apply script writes what a batch means for reminders and for the
// registry into two outbox streams of the shard, in the same atomic step
// as the unread state. Two relays per owned shard take it from there,
// outside the shard loop: the reminder relay hands opened and closed
// episodes to Hooks, the registry relay hands device and preference events
// to Registry. Each deletes an outbox entry only once it was handed over,
// so a crash, a PostgreSQL outage or a slow asynq never loses a reminder
// or a registry change, and never holds back unread state and counters.

// relayBatch is the most outbox entries a relay takes at once.
const relayBatch = 64

// relayPoll is how often an idle relay looks at its outbox without being
// woken (entries left by an earlier owner of the shard).
const relayPoll = time.Second

// Counts are counter increments: field dimensions → amount.
type Counts = map[counters.Dims]int64

// runRelays runs the shard's relays until ctx is done.
func (c *Consumer) runRelays(ctx context.Context, s int, wake <-chan struct{}) {
	regWake := make(chan struct{}, 1)
	remWake := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c.cfg.Registry != nil {
			c.relay(ctx, s, "registry", regWake, c.relayRegistry)
		}
	}()
	go func() {
		// Fan the shard loop's wake-ups out to both relays.
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
				for _, ch := range []chan struct{}{regWake, remWake} {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	if c.cfg.Hooks != nil {
		c.relay(ctx, s, "reminders", remWake, c.relayReminders)
	}
	<-done
}

// relay runs one relay loop: step handles what is in the outbox, and
// reports whether it found anything.
func (c *Consumer) relay(ctx context.Context, s int, name string, wake <-chan struct{}, step func(context.Context, int) (bool, error)) {
	backoff := newBackoff()
	failing := false
	tick := time.NewTicker(relayPoll)
	defer tick.Stop()
	for ctx.Err() == nil {
		more, err := step(ctx, s)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.met.relayErrors.WithLabelValues(name).Inc()
			if !failing {
				c.log.Warn("relay failed; retrying until it succeeds (the shard keeps applying)", "relay", name, "shard", s, "err", err)
				failing = true
			}
			sleep(ctx, backoff.next())
			continue
		}
		if failing {
			c.log.Info("relay works again", "relay", name, "shard", s)
			failing = false
		}
		backoff.reset()
		if more {
			continue
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-tick.C:
		}
	}
}

// wake tells the relays of shard s that its outboxes have new entries.
func (c *Consumer) wake(s int) {
	c.mu.Lock()
	run := c.owned[s]
	c.mu.Unlock()
	if run == nil {
		return
	}
	select {
	case run.wake <- struct{}{}:
	default:
	}
}

// readOutbox returns the oldest entries of the outbox box of shard s, at
// most relayBatch, and sets the relay's gauge of entries waiting.
func (c *Consumer) readOutbox(ctx context.Context, box, relay string, s int) ([]redis.XMessage, error) {
	msgs, err := c.rdb.XRangeN(ctx, box, "-", "+", relayBatch).Result()
	if err != nil {
		return nil, fmt.Errorf("read the %s outbox: %w", relay, err)
	}
	c.met.outbox.WithLabelValues(relay, shardLabel(s)).Set(float64(len(msgs)))
	return msgs, nil
}

// relayReminders hands the episodes of the oldest outbox entries to Hooks,
// then deletes the entries and records the counts Hooks returned, in one
// step: a crash in between hands them over again (Hooks is idempotent) and
// counts them once.
func (c *Consumer) relayReminders(ctx context.Context, s int) (bool, error) {
	box := c.ks.Outbox(s)
	msgs, err := c.readOutbox(ctx, box, "reminders", s)
	if err != nil || len(msgs) == 0 {
		return false, err
	}
	var opened, closed []Episode
	for _, m := range msgs {
		r, _ := m.Values["r"].(string)
		o, cl := parseOutbox(s, r)
		opened, closed = append(opened, o...), append(closed, cl...)
	}
	// Episodes opened are scheduled before those closed are cancelled: an
	// episode opened and read within the same entries ends cancelled.
	counts, err := c.cfg.Hooks.EpisodesOpened(ctx, opened)
	if err != nil {
		return false, fmt.Errorf("schedule reminders: %w", err)
	}
	if len(closed) > 0 {
		if err := c.cfg.Hooks.EpisodesClosed(ctx, closed); err != nil {
			return false, fmt.Errorf("cancel reminders: %w", err)
		}
	}
	ok, err := c.ackOutbox(ctx, s, box, msgs, counts)
	if err != nil {
		return false, err
	}
	if ok {
		c.cfg.Hooks.Counted(counts)
	}
	return len(msgs) == relayBatch, nil
}

// ackOutboxScript deletes outbox entries and records their counts, once:
// if any of the entries is gone (another relay of the shard, an earlier
// owner finishing, took them), it does nothing and returns 0.
//
// The entries are the oldest of the outbox, in id order, as one XRANGE
// read them: no other entry has an id between the first and the last
// (XADD gives each new entry an id above every id the stream has had), so
// one XRANGE over that span finds all n exactly when none is gone.
//
// KEYS[1] outbox, KEYS[2] counters hash, KEYS[3] counter index (one shard).
// ARGV[1] minute, ARGV[2] counters TTL (s), ARGV[3] number of entry ids n,
// ARGV[4..3+n] entry ids, in id order, then field, increment pairs.
// Returns 1 if it deleted the entries. An emptied outbox is deleted (the
// apply script makes it again), so that it holds no memory while idle.
var ackOutboxScript = datastore.NewScript("ingest", `#!lua
local n = tonumber(ARGV[3])
if #redis.call('XRANGE', KEYS[1], ARGV[4], ARGV[3 + n], 'COUNT', n + 1) ~= n then return 0 end
local any = false
for i = 4 + n, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  any = true
end
if any then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
redis.call('XDEL', KEYS[1], unpack(ARGV, 4, 3 + n))
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return 1`)

func (c *Consumer) ackOutbox(ctx context.Context, s int, box string, msgs []redis.XMessage, counts Counts) (bool, error) {
	now := c.cfg.Now()
	minute := keys.Minute(now)
	args := make([]any, 0, 3+len(msgs)+2*len(counts))
	args = append(args, minute, int64(counters.SafetyTTL/time.Second), len(msgs))
	for _, m := range msgs {
		args = append(args, m.ID)
	}
	for d, n := range counts {
		args = append(args, counters.Field(d), n)
	}
	n, err := ackOutboxScript.Run(ctx, c.rdb, []string{box, c.ks.Counters(s, minute), c.ks.CounterIndex(s)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("acknowledge outbox entries: %w", err)
	}
	return n == 1, nil
}

// delEntriesScript deletes stream entries, and the stream once empty.
//
// KEYS[1] stream; ARGV entry ids.
var delEntriesScript = datastore.NewScript("ingest", `#!lua
redis.call('XDEL', KEYS[1], unpack(ARGV))
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return 1`)

// parseOutbox reads the lines of an outbox entry (see apply.lua).
func parseOutbox(s int, r string) (opened, closed []Episode) {
	for line := range strings.SplitSeq(r, "\n") {
		f := strings.Split(line, "|")
		switch {
		case f[0] == "O" && len(f) >= 6:
			ts, _ := strconv.ParseInt(f[4], 10, 64)
			applied, _ := strconv.ParseInt(f[5], 10, 64)
			for i := 6; i+1 < len(f); i += 2 {
				opened = append(opened, Episode{Shard: s, App: f[3], User: f[i], Conversation: f[1], ID: f[2],
					Mentioned: f[i+1] == "1", OpenedAt: time.UnixMilli(ts), AppliedAt: time.UnixMilli(applied)})
			}
		case f[0] == "C" && len(f) == 5:
			closed = append(closed, Episode{Shard: s, User: f[1], Conversation: f[2], ID: f[3], App: f[4]})
		}
	}
	return opened, closed
}

// scoped returns a device or preference event with its user and
// conversations under their scoped names (keys.Scope), as the registry
// keeps them: the rows of two apps never meet.
func (c *Consumer) scoped(ev *event.Event) *event.Event {
	sc := func(id string) string { return keys.Scope(ev.App, c.cfg.DefaultApp, id) }
	ev.User = sc(ev.User)
	if len(ev.Conversations) > 0 {
		modes := make(map[string]string, len(ev.Conversations))
		for conv, mode := range ev.Conversations {
			modes[sc(conv)] = mode
		}
		ev.Conversations = modes
	}
	return ev
}

// relayRegistry hands the oldest device and preference events of the
// registry outbox to Registry, in stream order, then deletes them.
// Registry keeps the newest state by event ts, so handing an event over
// twice (a crash in between) changes nothing.
func (c *Consumer) relayRegistry(ctx context.Context, s int) (bool, error) {
	box := c.ks.RegistryOutbox(s)
	msgs, err := c.readOutbox(ctx, box, "registry", s)
	if err != nil || len(msgs) == 0 {
		return false, err
	}
	evs := make([]*event.Event, 0, len(msgs))
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
		raw, _ := m.Values["e"].(string)
		ev, err := event.DecodeString(raw)
		if err != nil {
			// Decoded once already, before it was applied: only a newer
			// contract than this binary's can fail here.
			c.log.Error("registry outbox entry does not decode; dropped", "shard", s, "entry", m.ID, "err", err)
			continue
		}
		evs = append(evs, c.scoped(ev))
	}
	if len(evs) > 0 {
		if err := c.cfg.Registry.Apply(ctx, evs); err != nil {
			return false, fmt.Errorf("registry: %w", err)
		}
	}
	if err := delEntriesScript.Run(ctx, c.rdb, []string{box}, ids).Err(); err != nil {
		return false, fmt.Errorf("delete registry outbox entries: %w", err)
	}
	return len(msgs) == relayBatch, nil
}
