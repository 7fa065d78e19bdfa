package ingest

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/keys"
)

//go:embed apply.lua
var applySource string

var applyScript = redis.NewScript(applySource)

// Reasons ingest adds to the decoder's (event.Reason) for dead letters.
const (
	ReasonNoEventField  event.Reason = "no_event_field" // the entry has no "event" field
	ReasonWrongShard    event.Reason = "wrong_shard"    // published to another shard than its routing key's
	ReasonMaxDeliveries event.Reason = "max_deliveries" // delivered more than MaxDeliveries times
	ReasonApplyFailed   event.Reason = "apply_failed"   // Redis rejected the event's update (a key of the wrong type, say)
)

// EventField is the stream entry field that holds the event's JSON.
const EventField = "event"

// maxDeadPayload caps the payload copied into a dead-letter entry; the
// entry records the original size.
const maxDeadPayload = event.MaxEventBytes

// item is one stream entry of a batch: a decoded event, or the reason it
// goes to the dead-letter stream.
type item struct {
	entry      string
	ev         *event.Event
	reason     event.Reason
	detail     string
	payload    string // for a dead letter
	raw        string // the entry's event field
	deliveries int64
}

// decode turns stream entries into items. deliveries, if set, gives the
// delivery count of claimed entries.
func (c *Consumer) decode(shard int, msgs []redis.XMessage, deliveries map[string]int64) []item {
	items := make([]item, 0, len(msgs))
	for _, m := range msgs {
		it := item{entry: m.ID, deliveries: deliveries[m.ID]}
		raw, ok := m.Values[EventField].(string)
		it.raw = raw
		switch {
		case it.deliveries > int64(c.cfg.MaxDeliveries):
			it.reason, it.detail = ReasonMaxDeliveries, fmt.Sprintf("delivered %d times, limit %d", it.deliveries, c.cfg.MaxDeliveries)
			it.payload = raw
		case !ok:
			it.reason, it.detail = ReasonNoEventField, `the entry has no "event" field`
			it.payload = fieldsOf(m.Values)
		default:
			it.payload = raw
			ev, err := event.DecodeString(raw) // a 1 MB entry is rejected before it is copied
			if err != nil {
				it.reason, it.detail = event.ReasonOf(err), err.Error()
			} else if s := c.cfg.Keyspace.Shard(ev.RoutingKey()); s != shard {
				it.reason = ReasonWrongShard
				it.detail = fmt.Sprintf("routing key %q belongs to shard %d, not %d", ev.RoutingKey(), s, shard)
			} else {
				it.ev, it.payload = ev, ""
			}
		}
		items = append(items, it)
	}
	return items
}

// fieldsOf renders the fields of an entry without an "event" field, for
// its dead letter.
func fieldsOf(v map[string]any) string {
	var b strings.Builder
	for k, x := range v {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", k, x)
	}
	return b.String()
}

// batchResult is what applying a batch did.
type batchResult struct {
	Applied, Duplicates, AlreadyAcked, Dead int
	Opened, Closed                          []Episode
}

// plan lists the episodes a batch may open, from the current state and the
// batch itself, so the hooks can schedule them before the batch is
// acknowledged. It errs on the side of more: an episode the script does not
// open costs a reminder that finds nothing to do; a missed one would lose a
// reminder.
func (c *Consumer) plan(ctx context.Context, shard int, items []item) ([]Episode, error) {
	type pair struct{ user, conv string }
	open := map[pair]bool{}
	var probe []pair
	for _, it := range items {
		if it.ev == nil || it.ev.Type != event.TypeMessage {
			continue
		}
		for _, r := range it.ev.Recipients {
			p := pair{r, it.ev.Conversation}
			if _, ok := open[p]; !ok && r != it.ev.Sender {
				open[p] = false
				probe = append(probe, p)
			}
		}
	}
	if len(probe) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.IntCmd, len(probe))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pr := range probe {
			cmds[i] = p.Exists(ctx, c.ks.Episode(shard, pr.user, pr.conv))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("plan episodes: %w", err)
	}
	for i, pr := range probe {
		open[pr] = cmds[i].Val() == 1
	}
	var eps []Episode
	for _, it := range items {
		ev := it.ev
		if ev == nil {
			continue
		}
		switch ev.Type {
		case event.TypeRead:
			// A read may leave messages unread (upto an older one): treat
			// the episode as closed so a later message schedules again.
			open[pair{ev.User, ev.Conversation}] = false
		case event.TypeMessage:
			open[pair{ev.Sender, ev.Conversation}] = false
			for _, r := range ev.Recipients {
				p := pair{r, ev.Conversation}
				if r == ev.Sender || open[p] {
					continue
				}
				open[p] = true
				eps = append(eps, Episode{
					Shard: shard, App: ev.App, User: r, Conversation: ev.Conversation,
					ID: it.entry, Mentioned: contains(ev.Mentions, r), OpenedAt: ev.Time(),
				})
			}
		}
	}
	return eps, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// apply runs apply.lua over a batch.
func (c *Consumer) apply(ctx context.Context, shard int, items []item, wantEpisodes bool) (batchResult, error) {
	now := c.cfg.Now()
	ks := c.ks
	bucket := now.UnixMilli() / c.cfg.DedupeWindow.Milliseconds()
	day := keys.Day(now)
	dayStart := now.UTC().Truncate(24 * time.Hour).Unix()
	ks8 := [...]string{
		ks.Stream(shard), ks.Lease(shard), ks.Seen(shard, bucket), ks.Seen(shard, bucket-1),
		ks.Counters(shard, keys.Minute(now)), ks.CounterIndex(shard), ks.ActiveUsersIndex(shard), ks.DeadLetter(shard),
	}
	kk := append(make([]string, 0, 8+6*len(items)), ks8[:]...)
	want := "0"
	if wantEpisodes {
		want = "1"
	}
	args := make([]any, 0, 14+12*len(items))
	args = append(args, c.cfg.Group, c.cfg.Consumer, now.UnixMilli(), keys.Minute(now),
		int64(2*c.cfg.DedupeWindow/time.Second), int64(c.cfg.UnreadTTL/time.Second), c.cfg.PresenceTTL.Milliseconds(),
		c.cfg.RecentMessages, int64(counters.SafetyTTL/time.Second), c.cfg.DeadLetterMaxLen, want,
		int64(2*24*time.Hour/time.Second), day, dayStart)
	for _, it := range items {
		ev := it.ev
		if ev == nil {
			payload := it.payload
			if len(payload) > maxDeadPayload {
				payload = payload[:maxDeadPayload]
				it.detail += fmt.Sprintf(" (payload of %d bytes truncated to %d)", len(it.payload), maxDeadPayload)
			}
			args = append(args, "X", it.entry, string(it.reason), it.detail, "", it.deliveries, payload)
			continue
		}
		switch ev.Type {
		case event.TypeMessage:
			n := 0
			for _, r := range ev.Recipients {
				if r != ev.Sender {
					n++
				}
			}
			kk = append(kk, ks.Conversation(shard, ev.Conversation), ks.Recent(shard, ev.Conversation),
				ks.Episode(shard, ev.Sender, ev.Conversation), ks.Badge(shard, ev.Sender),
				ks.ActiveUsers(shard, day, ev.App))
			args = append(args, "M", it.entry, ev.ID, ev.App, ev.Conversation, ev.Message, ev.Sender, ev.Preview, ev.TS, n)
			for _, r := range ev.Recipients {
				if r == ev.Sender {
					continue
				}
				kk = append(kk, ks.Episode(shard, r, ev.Conversation), ks.Badge(shard, r))
				m := "0"
				if contains(ev.Mentions, r) {
					m = "1"
				}
				args = append(args, r, m)
			}
		case event.TypeRead:
			kk = append(kk, ks.Episode(shard, ev.User, ev.Conversation), ks.Badge(shard, ev.User),
				ks.Recent(shard, ev.Conversation), ks.ActiveUsers(shard, day, ev.App))
			args = append(args, "R", it.entry, ev.ID, ev.App, ev.Conversation, ev.User, ev.UpTo)
		case event.TypePresence:
			device := ev.Device
			if device == "" {
				device = "default"
			}
			kk = append(kk, ks.Presence(shard, ev.User), ks.ActiveUsers(shard, day, ev.App))
			args = append(args, "P", it.entry, ev.ID, ev.App, ev.User, ev.Status, device)
		case event.TypeDeviceRegistered, event.TypeDeviceRemoved:
			args = append(args, "C", it.entry, ev.ID, ev.App, counters.DeviceEvents)
		case event.TypePrefs:
			args = append(args, "C", it.entry, ev.ID, ev.App, counters.PrefsEvents)
		}
	}
	res, err := applyScript.Run(ctx, c.rdb, kk, args...).Slice()
	if err != nil {
		if strings.HasPrefix(err.Error(), "NUDGELEASE") {
			return batchResult{}, fmt.Errorf("apply shard %d: %w", shard, ErrLeaseLost)
		}
		if strings.HasPrefix(err.Error(), "NUDGEORDER") {
			return batchResult{}, fmt.Errorf("apply shard %d: %w: %s", shard, errOutOfOrder, err)
		}
		return batchResult{}, fmt.Errorf("apply shard %d: %w", shard, err)
	}
	return parseApply(shard, res), nil
}

func parseApply(shard int, res []any) batchResult {
	num := func(i int) int {
		if i < len(res) {
			if n, ok := res[i].(int64); ok {
				return int(n)
			}
		}
		return 0
	}
	r := batchResult{Applied: num(0), Duplicates: num(1), AlreadyAcked: num(2), Dead: num(3)}
	str := func(i int) string { s, _ := res[i].(string); return s }
	for i := 4; i+4 < len(res); i += 5 {
		ep := Episode{Shard: shard, User: str(i + 1), Conversation: str(i + 2), ID: str(i + 3)}
		if str(i) == "o" {
			ep.Mentioned = str(i+4) == "1"
			r.Opened = append(r.Opened, ep)
		} else {
			ep.App = str(i + 4)
			r.Closed = append(r.Closed, ep)
		}
	}
	return r
}
