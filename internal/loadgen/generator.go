// Package loadgen produces realistic chat traffic for Nudge and publishes it
// to the shard streams.
//
// A Generator draws a fixed population from a seed: users, conversations
// with fixed membership (direct chats of two, groups of a few to a few
// hundred), push devices and preferences. It then draws events one at a time:
// messages in Zipf-skewed conversations from Zipf-skewed senders to the
// other members, reads of those conversations after a log-normal delay
// (always up to a message already sent), presence changes, device token
// churn, and on request duplicates and malformed entries. The same Config and
// the same clock readings give the same events.
//
// A Runner publishes a Generator's events with producer.PublishBatch in
// pipelined batches, at a steady rate or as fast as Redis takes them, keeps
// Stats, and can record every event as NDJSON so that a test can recompute
// the totals Nudge should reach.
package loadgen

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nudgehq/nudge/event"
)

// Kind is the kind of an Item.
type Kind uint8

// Kinds of items.
const (
	KindSetup     Kind = iota + 1 // a device or preference registered before the traffic
	KindEvent                     // an event of the traffic
	KindDuplicate                 // an event published again, with the same id
	KindBad                       // a malformed entry, published raw
)

func (k Kind) String() string {
	switch k {
	case KindSetup:
		return "setup"
	case KindEvent:
		return "event"
	case KindDuplicate:
		return "duplicate"
	case KindBad:
		return "bad"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Item is one stream entry drawn by a Generator.
type Item struct {
	Kind Kind
	// Event is the valid event of every kind but KindBad. A duplicate
	// shares the *event.Event of its original: treat it as read-only.
	Event *event.Event
	// Raw is the payload of a KindBad entry.
	Raw []byte
	// RoutingKey picks the shard of a KindBad entry.
	RoutingKey string
	// Reason is the dead-letter reason a consumer should give a KindBad
	// entry.
	Reason event.Reason
}

// Generator draws a population and then its traffic. It is not safe for
// concurrent use.
type Generator struct {
	cfg   Config
	r     *rand.Rand
	scale float64 // TimeScale

	users       []user
	withDevices []int32 // users with at least one push device
	convs       []conv
	userZipf    *rand.Zipf
	convZipf    *rand.Zipf
	memberZipf  map[int]*rand.Zipf // sender position by member count

	setup     []*event.Event // registered first; ID and TS are set when drawn
	setupNext int

	q            queue
	taskSeq      uint64
	eventSeq     uint64
	messageSeq   uint64
	pendingReads int
	staleReads   int // cancelled reads still in q
	idBuf        []byte

	// Reactions to pushes (React): the pushes waiting to be drawn, and how
	// to find a push's user and conversation.
	inbox     chan Push
	tokenUser map[string]int32 // device token -> user index
	convIndex map[string]int32 // app + "/" + conversation id -> conversation index
	reacted   int64            // pushes reacted to (opened or read)
	dropped   int64            // pushes not reacted to: inbox full, or unknown
}

// Push is a reminder push one of the generator's devices got, as the push
// sandbox recorded it: its token and the push's data.
type Push struct {
	Token, Platform, Episode, Conversation string
	Stage                                  int
}

// pushInbox bounds the pushes waiting to be reacted to.
const pushInbox = 4096

// NewGenerator validates cfg and draws the population.
func NewGenerator(cfg Config) (*Generator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	g := &Generator{
		cfg:        cfg,
		r:          r,
		scale:      cfg.TimeScale,
		userZipf:   rand.NewZipf(r, cfg.ZipfS, 1, uint64(cfg.Users-1)),
		convZipf:   rand.NewZipf(r, cfg.ZipfS, 1, uint64(cfg.Conversations-1)),
		memberZipf: map[int]*rand.Zipf{},
	}
	g.drawUsers()
	userConvs := g.drawConversations()
	g.drawSetup(userConvs)
	g.inbox = make(chan Push, pushInbox)
	g.tokenUser = map[string]int32{}
	for i, u := range g.users {
		for _, d := range u.devices {
			g.tokenUser[d.token] = int32(i)
		}
	}
	g.convIndex = make(map[string]int32, len(g.convs))
	for i, c := range g.convs {
		g.convIndex[c.app+"/"+c.id] = int32(i)
	}
	return g, nil
}

// React hands the generator a push one of its devices got: its user opens
// it (OpenRate) and reads the conversation (PushReadRate), after a short
// delay, in the events Next draws later. Safe to call from any goroutine;
// a push that finds the inbox full is dropped and counted.
func (g *Generator) React(p Push) {
	select {
	case g.inbox <- p:
	default:
		atomic.AddInt64(&g.dropped, 1)
	}
}

// Reactions returns the pushes reacted to and those dropped.
func (g *Generator) Reactions() (reacted, dropped int64) {
	return atomic.LoadInt64(&g.reacted), atomic.LoadInt64(&g.dropped)
}

// react turns a push into the user's opens and reads, scheduled a short
// delay after now.
func (g *Generator) react(p Push, now time.Time) {
	ui, ok := g.tokenUser[p.Token]
	if !ok {
		atomic.AddInt64(&g.dropped, 1)
		return
	}
	u := &g.users[ui]
	ns := now.UnixNano()
	acted := false
	if g.r.Float64() < g.cfg.OpenRate {
		e := &event.Event{Type: event.TypeOpened, App: u.app, User: u.id, Episode: p.Episode, Stage: p.Stage,
			Platform: p.Platform, Conversation: p.Conversation}
		g.schedule(task{due: ns + g.reactDelay(), kind: taskOpened, ev: e})
		if g.r.Float64() < 0.1 { // the app reports the same open twice (another event id)
			again := *e
			g.schedule(task{due: ns + 2*g.reactDelay(), kind: taskOpened, ev: &again})
		}
		acted = true
	}
	if ci, ok := g.convIndex[u.app+"/"+p.Conversation]; ok && g.r.Float64() < g.cfg.PushReadRate {
		c := &g.convs[ci]
		if pos := slices.Index(c.members, ui); pos >= 0 && c.pendingRead[pos] == 0 {
			c.pendingRead[pos] = g.schedule(task{due: ns + g.reactDelay(), kind: taskRead, conv: ci, pos: int32(pos)})
			g.pendingReads++
			acted = true
		}
	}
	if acted {
		atomic.AddInt64(&g.reacted, 1)
	}
}

// reactDelay draws the delay of a reaction to a push: 2 to 30 s, times
// TimeScale.
func (g *Generator) reactDelay() int64 {
	return int64((2 + 28*g.r.Float64()) * float64(time.Second) * g.scale)
}

// SetupRemaining returns the number of setup events (device registrations
// and preferences) Next has yet to return before the traffic starts.
func (g *Generator) SetupRemaining() int { return len(g.setup) - g.setupNext }

// PendingReads returns the number of reads drawn but not yet due.
func (g *Generator) PendingReads() int { return g.pendingReads }

// Next returns the next entry at the time now: the next setup event while
// there are any; else a bad entry (a BadRate share of the traffic); else a
// read, duplicate or token registration that is due; else a new event.
// Events are stamped now and delays run on the clock Next is given: the
// same Config and the same times give the same items.
func (g *Generator) Next(now time.Time) Item {
	if g.setupNext < len(g.setup) {
		e := g.setup[g.setupNext]
		g.setup[g.setupNext] = nil
		g.setupNext++
		g.stamp(e, now)
		return Item{Kind: KindSetup, Event: e}
	}
	if g.cfg.BadRate > 0 && g.r.Float64() < g.cfg.BadRate {
		return g.bad(now)
	}
	if it, ok := g.NextDue(now); ok {
		return it
	}
	ns := now.UnixNano()
	var e *event.Event
	switch x := g.r.Float64(); {
	case x < g.cfg.DeviceChurnRate:
		if len(g.withDevices) == 0 {
			e = g.message(now)
			break
		}
		e = g.churn(now)
	case x < g.cfg.DeviceChurnRate+g.cfg.PresenceRate:
		e = g.presence(now)
	default:
		e = g.message(now)
	}
	g.maybeDuplicate(e, ns)
	return Item{Kind: KindEvent, Event: e}
}

// NextDue returns the next entry that is due at the time now, once the
// setup is drawn: a read, duplicate, token registration or reaction to a
// push; ok is false when none is. It draws no new event.
func (g *Generator) NextDue(now time.Time) (it Item, ok bool) {
	ns := now.UnixNano()
	for drained := false; !drained; {
		select {
		case p := <-g.inbox:
			g.react(p, now)
		default:
			drained = true
		}
	}
	for len(g.q) > 0 && g.q.peek().due <= ns {
		if it, ok := g.emit(g.q.pop(), now); ok {
			return it, true
		}
	}
	return Item{}, false
}

// emit turns a due task into an item; ok is false for a read that was
// cancelled since (its reader sent a message in the meantime).
func (g *Generator) emit(t task, now time.Time) (Item, bool) {
	switch t.kind {
	case taskDuplicate:
		return Item{Kind: KindDuplicate, Event: t.ev}, true
	case taskRegister, taskOpened:
		g.stamp(t.ev, now)
		g.maybeDuplicate(t.ev, now.UnixNano())
		return Item{Kind: KindEvent, Event: t.ev}, true
	}
	c := &g.convs[t.conv]
	if c.pendingRead[t.pos] != t.seq {
		g.staleReads--
		return Item{}, false
	}
	c.pendingRead[t.pos] = 0
	g.pendingReads--
	upto := t.upto
	if upto == "" {
		upto = c.last
	}
	e := &event.Event{Type: event.TypeRead, App: c.app, Conversation: c.id,
		User: g.users[c.members[t.pos]].id, UpTo: upto}
	g.stamp(e, now)
	g.maybeDuplicate(e, now.UnixNano())
	return Item{Kind: KindEvent, Event: e}, true
}

func (g *Generator) schedule(t task) uint64 {
	g.taskSeq++
	t.seq = g.taskSeq
	g.q.push(t)
	return t.seq
}

const tokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

var (
	words = []string{
		"hi", "hey", "ok", "sure", "thanks", "lunch", "at", "noon", "meeting", "moved", "to", "3pm",
		"can", "you", "check", "the", "PR", "please", "deploy", "done", "see", "tomorrow", "call",
		"me", "when", "free", "running", "late", "on", "my", "way", "café", "über", "naïve", "ça",
		"va", "größe", "日本", "こんにちは", "спасибо", "👍", "🎉", "😂", "🙏", "❤️", "lol", "brb", "?",
	}
	locales   = []string{"en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP", "hi-IN", "ru-RU", ""}
	timeZones = []string{
		"", "UTC", "Europe/Berlin", "Europe/London", "America/New_York", "America/Los_Angeles",
		"America/Sao_Paulo", "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney", "Africa/Lagos", "Pacific/Auckland",
	}
	quietHours = []event.QuietHours{
		{Start: "22:00", End: "07:00"}, {Start: "23:30", End: "06:30"}, {Start: "00:00", End: "08:00"},
		{Start: "21:00", End: "09:00"}, {Start: "13:00", End: "14:00"}, {Start: "08:00", End: "08:00"},
	}
	reminderDelays = []int64{0, 60, 300, 900, 3600}
)
