package ingest

import (
	"context"
	_ "embed"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/keys"
)

//go:embed apply.lua
var applySource string

// applyScript is apply.lua with the prelude that defines the names it
// writes (names.go) after its first line, the shebang Redis reads flags
// from.
var applyScript = datastore.NewScript("ingest", withPrelude(applySource, applyPrelude()))

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
		if it.deliveries == 0 { // read new: its first delivery
			it.deliveries = 1
		}
		raw, ok := m.Values[EventField].(string)
		it.raw = raw
		size, cut := oversized(m)
		switch {
		case cut:
			it.reason = event.ReasonTooLarge
			it.detail = fmt.Sprintf("the entry is %d bytes, over the %d a read takes whole (payload truncated to the first %d bytes of its event)",
				size, maxEntryBytes, len(raw))
			it.payload = raw
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
	// Outbox and Registry count the entries written to the reminder and
	// registry outboxes, for their relays.
	Outbox, Registry int
}

func (r *batchResult) add(o batchResult) {
	r.Applied += o.Applied
	r.Duplicates += o.Duplicates
	r.AlreadyAcked += o.AlreadyAcked
	r.Dead += o.Dead
	r.Outbox += o.Outbox
	r.Registry += o.Registry
}

// The apply script touches a few keys per recipient; one that touches too
// many holds every client of Redis waiting (10,000 recipients took 130 ms
// in one script). A batch is applied in calls of at most callBudget units
// (an event is one unit plus one per recipient), and a message with more
// than chunkRecipients recipients in chunks of that many, each its own
// call: measured, a call of 512 units runs in a few milliseconds.
const (
	callBudget      = 512
	chunkRecipients = 400
)

// OpenedTTL is how long a reminder opened is remembered: an app reporting
// the same open again within it is not counted again.
const OpenedTTL = 7 * 24 * time.Hour

// chunkTTL bounds the life of a chunked message's progress key, should its
// last chunk never come (it was dead-lettered on its way, say).
const chunkTTL = 24 * time.Hour

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// recipientsOf returns the message's recipients other than its sender.
func recipientsOf(ev *event.Event) []string {
	for _, r := range ev.Recipients {
		if r == ev.Sender {
			out := make([]string, 0, len(ev.Recipients)-1)
			for _, r := range ev.Recipients {
				if r != ev.Sender {
					out = append(out, r)
				}
			}
			return out
		}
	}
	return ev.Recipients
}

// call is one run of the apply script: its keys and arguments past the
// fixed ones.
type call struct {
	keys  []string
	args  []any
	units int
}

// apply runs apply.lua over a batch, in as many calls as the batch's size
// takes (callBudget), in stream order.
func (c *Consumer) apply(ctx context.Context, shard int, items []item) (batchResult, error) {
	var res batchResult
	for _, cl := range c.calls(shard, items) {
		r, err := c.run(ctx, shard, cl)
		if err != nil {
			return res, err
		}
		res.add(r)
	}
	return res, nil
}

// calls splits a batch into script calls.
func (c *Consumer) calls(shard int, items []item) []call {
	ks := c.ks
	now := c.cfg.Now()
	day := keys.Day(now)
	var (
		out []call
		cur call
	)
	flush := func() {
		if cur.units > 0 {
			out = append(out, cur)
		}
		cur = call{}
	}
	// add appends one event of the given units, in a call of its own when
	// it does not fit the current one.
	add := func(units int, keys []string, args ...any) {
		if cur.units > 0 && cur.units+units > callBudget {
			flush()
		}
		cur.keys = append(cur.keys, keys...)
		cur.args = append(cur.args, args...)
		cur.units += units
	}
	for _, it := range items {
		ev := it.ev
		if ev == nil {
			payload := RedactTokens(it.payload)
			if len(payload) > maxDeadPayload {
				payload = payload[:maxDeadPayload]
				it.detail += fmt.Sprintf(" (payload of %d bytes truncated to %d)", len(it.payload), maxDeadPayload)
			}
			add(1, nil, "X", it.entry, string(it.reason), it.detail, "", it.deliveries, payload)
			continue
		}
		// Ids as Redis keeps them: an app's own (keys.Scope).
		app := ev.App
		sc := func(id string) string { return keys.Scope(app, c.cfg.DefaultApp, id) }
		id := sc(ev.ID)
		switch ev.Type {
		case event.TypeMessage:
			conv, sender := sc(ev.Conversation), sc(ev.Sender)
			rs := recipientsOf(ev)
			head := []string{ks.Conversation(shard, conv), ks.Recent(shard, conv),
				ks.Episode(shard, sender, conv), ks.Badge(shard, sender),
				ks.ActiveUsers(shard, day, app)}
			users := func(kk []string, args []any, part []string) ([]string, []any) {
				for _, r := range part {
					user := sc(r)
					kk = append(kk, ks.Episode(shard, user, conv), ks.Badge(shard, user))
					m := "0"
					if contains(ev.Mentions, r) {
						m = "1"
					}
					args = append(args, user, m)
				}
				return kk, args
			}
			if len(rs) <= chunkRecipients {
				kk, args := users(head, []any{"M", it.entry, id, app, conv, ev.Message, sender, ev.Preview, ev.ConversationTitle, ev.TS, len(rs)}, rs)
				add(1+len(rs), kk, args...)
				continue
			}
			n := (len(rs) + chunkRecipients - 1) / chunkRecipients
			progress := ks.Chunk(shard, it.entry)
			for i := range n {
				part := rs[i*chunkRecipients : min((i+1)*chunkRecipients, len(rs))]
				kk := append(append(make([]string, 0, 6+2*len(part)), head...), progress)
				kk, args := users(kk, []any{"K", it.entry, id, app, conv, ev.Message, sender, ev.Preview, ev.ConversationTitle, ev.TS,
					len(rs), i, n, len(part)}, part)
				add(callBudget, kk, args...) // a call of its own
			}
		case event.TypeRead:
			conv, user := sc(ev.Conversation), sc(ev.User)
			add(1, []string{ks.Episode(shard, user, conv), ks.Badge(shard, user),
				ks.Recent(shard, conv), ks.ActiveUsers(shard, day, app)},
				"R", it.entry, id, app, conv, user, ev.UpTo)
		case event.TypePresence:
			device := ev.Device
			if device == "" {
				device = "default"
			}
			user := sc(ev.User)
			add(1, []string{ks.Presence(shard, user), ks.ActiveUsers(shard, day, app)},
				"P", it.entry, id, app, user, ev.Status, device)
		case event.TypeDeviceRegistered, event.TypeDeviceRemoved:
			add(1, nil, "C", it.entry, id, app, counters.DeviceEvents, c.registryPayload(it))
		case event.TypePrefs:
			add(1, nil, "C", it.entry, id, app, counters.PrefsEvents, c.registryPayload(it))
		case event.TypeOpened:
			add(1, []string{ks.Opened(shard, sc(ev.User), ev.Episode, ev.Stage)}, "O", it.entry, id, app, ev.Platform, ev.Stage)
		}
	}
	flush()
	return out
}

// registryPayload is what a device or preference event puts in the
// registry outbox: the event's JSON, when there is a registry to store it.
func (c *Consumer) registryPayload(it item) string {
	if c.cfg.Registry == nil {
		return ""
	}
	return it.raw
}

// run runs one call of the apply script.
func (c *Consumer) run(ctx context.Context, shard int, cl call) (batchResult, error) {
	now := c.cfg.Now()
	ks := c.ks
	bucket := now.UnixMilli() / c.cfg.DedupeWindow.Milliseconds()
	kk := make([]string, 0, 10+len(cl.keys))
	kk = append(kk,
		ks.Stream(shard), ks.Lease(shard), ks.Seen(shard, bucket), ks.Seen(shard, bucket-1),
		ks.Counters(shard, keys.Minute(now)), ks.CounterIndex(shard), ks.ActiveUsersIndex(shard), ks.DeadLetter(shard),
		ks.Outbox(shard), ks.RegistryOutbox(shard))
	kk = append(kk, cl.keys...)
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	args := make([]any, 0, 16+len(cl.args))
	args = append(args, c.cfg.Group, c.cfg.Consumer, now.UnixMilli(), keys.Minute(now),
		int64(2*c.cfg.DedupeWindow/time.Second), int64(c.cfg.UnreadTTL/time.Second), c.cfg.PresenceTTL.Milliseconds(),
		c.cfg.RecentMessages, int64(counters.SafetyTTL/time.Second), c.cfg.DeadLetterMaxLen, flag(c.cfg.Hooks != nil),
		int64(2*24*time.Hour/time.Second), keys.Day(now), now.UTC().Truncate(24*time.Hour).Unix(),
		flag(c.cfg.Registry != nil), int64(chunkTTL/time.Second), c.cfg.ConversionWindow.Milliseconds(), int64(OpenedTTL/time.Second))
	args = append(args, cl.args...)
	res, err := applyScript.Run(ctx, c.rdb, kk, args...).Slice()
	if err != nil {
		if datastore.HasCode(err, datastore.CodeLease) {
			return batchResult{}, fmt.Errorf("apply shard %d: %w", shard, ErrLeaseLost)
		}
		if datastore.HasCode(err, datastore.CodeOrder) {
			return batchResult{}, fmt.Errorf("apply shard %d: %w: %s", shard, errOutOfOrder, err)
		}
		return batchResult{}, fmt.Errorf("apply shard %d: %w", shard, err)
	}
	num := func(i int) int {
		if i < len(res) {
			if n, ok := res[i].(int64); ok {
				return int(n)
			}
		}
		return 0
	}
	return batchResult{Applied: num(0), Duplicates: num(1), AlreadyAcked: num(2), Dead: num(3), Outbox: num(4), Registry: num(5)}, nil
}

// tokenValue finds the value of every "token" member of a JSON text, valid
// or not.
var tokenValue = regexp.MustCompile(`("token"\s*:\s*")((?:[^"\\]|\\.)*)(")`)

// RedactTokens shortens the device tokens in a payload bound for the
// dead-letter stream, as logs do: a short prefix, an ellipsis and the
// length. Whoever reads dead letters sees which device, not its token.
func RedactTokens(payload string) string {
	if !strings.Contains(payload, `"token"`) {
		return payload
	}
	return tokenValue.ReplaceAllStringFunc(payload, func(m string) string {
		sub := tokenValue.FindStringSubmatch(m)
		tok := sub[2]
		n := min(6, len(tok)/2)
		for n > 0 && !utf8.RuneStart(tok[n]) {
			n--
		}
		return sub[1] + tok[:n] + "…(" + strconv.Itoa(len(tok)) + ")" + sub[3]
	})
}
