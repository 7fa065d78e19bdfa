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
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
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

type user struct {
	id       string
	app      string
	locale   string
	devices  []device
	presence []string // device ids presence events name
	online   uint8    // bit i: presence[i] is online
}

type device struct {
	platform string
	token    string
}

type conv struct {
	id          string
	app         string
	group       bool
	members     []int32  // user indexes, ascending: the most active first
	pendingRead []uint64 // per member: task seq of its pending read, 0 if none
	last        string   // the newest message's id
}

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

func (g *Generator) drawUsers() {
	cfg := &g.cfg
	g.users = make([]user, cfg.Users)
	for i := range g.users {
		u := &g.users[i]
		u.id = "u" + strconv.Itoa(i)
		u.app = cfg.Apps[i%len(cfg.Apps)]
		u.locale = locales[g.r.IntN(len(locales))]
		if g.r.Float64() < cfg.DeviceFraction {
			n := 1 + g.r.IntN(3)
			for k := range n {
				platform := event.PlatformFCM
				if g.r.Float64() < cfg.APNsFraction {
					platform = event.PlatformAPNs
				}
				u.devices = append(u.devices, device{platform: platform, token: g.token(platform)})
				u.presence = append(u.presence, u.id+"-"+platform+strconv.Itoa(k+1))
			}
			g.withDevices = append(g.withDevices, int32(i))
		} else {
			u.presence = []string{u.id + "-web"}
		}
	}
}

// drawConversations draws the conversations and their members, and returns
// each user's conversations.
func (g *Generator) drawConversations() [][]int32 {
	cfg := &g.cfg
	apps := len(cfg.Apps)
	g.convs = make([]conv, cfg.Conversations)
	userConvs := make([][]int32, cfg.Users)
	taken := make([]bool, cfg.Users)
	for i := range g.convs {
		c := &g.convs[i]
		app := i % apps
		c.app = cfg.Apps[app]
		c.group = g.r.Float64() < cfg.GroupFraction
		size := 2
		if c.group {
			c.id = "g" + strconv.Itoa(i)
			if g.r.Float64() < cfg.LargeGroupFraction {
				size = cfg.LargeGroupSize
			} else {
				// Log-uniform: as many groups of 3 to 6 as of 25 to 50.
				lo, hi := float64(cfg.GroupSizeMin), float64(cfg.GroupSizeMax+1)
				size = min(int(lo*math.Pow(hi/lo, g.r.Float64())), cfg.GroupSizeMax)
			}
		} else {
			c.id = "d" + strconv.Itoa(i)
		}
		size = min(size, g.usersIn(app))
		c.members = g.drawMembers(app, size, taken)
		c.pendingRead = make([]uint64, len(c.members))
		for _, m := range c.members {
			userConvs[m] = append(userConvs[m], int32(i))
		}
	}
	return userConvs
}

// drawMembers draws size distinct users of an app, half of the draws skewed
// towards active users, and returns them in ascending order. taken is
// scratch space, all false, left all false.
func (g *Generator) drawMembers(app, size int, taken []bool) []int32 {
	apps, n := len(g.cfg.Apps), g.usersIn(app)
	members := make([]int32, 0, size)
	if 2*size > n {
		for _, k := range g.r.Perm(n)[:size] {
			members = append(members, int32(k*apps+app))
		}
	} else {
		for len(members) < size {
			var u int
			if g.r.IntN(2) == 0 {
				u = g.activeUserIn(app)
			} else {
				u = g.r.IntN(n)*apps + app
			}
			if !taken[u] {
				taken[u] = true
				members = append(members, int32(u))
			}
		}
		for _, m := range members {
			taken[m] = false
		}
	}
	slices.Sort(members)
	return members
}

// usersIn returns the number of users of the app at index app.
func (g *Generator) usersIn(app int) int {
	apps := len(g.cfg.Apps)
	return (g.cfg.Users - app + apps - 1) / apps
}

// activeUserIn draws a user of an app, skewed towards active users.
func (g *Generator) activeUserIn(app int) int {
	apps := len(g.cfg.Apps)
	u := int(g.userZipf.Uint64())
	u += app - u%apps
	if u >= g.cfg.Users {
		u -= apps
	}
	return u
}

func (g *Generator) drawSetup(userConvs [][]int32) {
	for i := range g.users {
		u := &g.users[i]
		for _, d := range u.devices {
			g.setup = append(g.setup, &event.Event{V: event.Version, Type: event.TypeDeviceRegistered, App: u.app,
				User: u.id, Platform: d.platform, Token: d.token, Locale: u.locale})
		}
		var prefs *event.Event
		if g.r.Float64() < g.cfg.PrefsFraction {
			prefs = g.prefs(u, userConvs[i])
		}
		if g.cfg.ReminderDelay > 0 {
			if prefs == nil {
				prefs = &event.Event{V: event.Version, Type: event.TypePrefs, App: u.app, User: u.id}
			}
			d := max(1, int64(g.cfg.ReminderDelay/time.Second))
			prefs.ReminderDelayS = &d
		}
		if prefs != nil {
			g.setup = append(g.setup, prefs)
		}
	}
}

// prefs draws the preferences of a user who sets some.
func (g *Generator) prefs(u *user, convs []int32) *event.Event {
	e := &event.Event{V: event.Version, Type: event.TypePrefs, App: u.app, User: u.id}
	if g.r.Float64() < 0.7 {
		tz := timeZones[g.r.IntN(len(timeZones))]
		e.TimeZone = &tz
	}
	if g.r.Float64() < 0.5 {
		q := quietHours[g.r.IntN(len(quietHours))]
		e.QuietHours = &q
	}
	if g.r.Float64() < 0.3 {
		d := reminderDelays[g.r.IntN(len(reminderDelays))]
		e.ReminderDelayS = &d
	}
	if len(convs) > 0 && g.r.Float64() < 0.6 {
		e.Conversations = map[string]string{}
		for range 1 + g.r.IntN(min(3, len(convs))) {
			mode := event.ModeMentions
			switch x := g.r.Float64(); {
			case x < 0.4:
				mode = event.ModeMuted
			case x > 0.9:
				mode = event.ModeAll
			}
			e.Conversations[g.convs[convs[g.r.IntN(len(convs))]].id] = mode
		}
	}
	if e.TimeZone == nil && e.QuietHours == nil && e.ReminderDelayS == nil && e.Conversations == nil {
		tz := ""
		e.TimeZone = &tz
	}
	return e
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

func (g *Generator) message(now time.Time) *event.Event {
	ci := int32(g.convZipf.Uint64())
	c := &g.convs[ci]
	n := len(c.members)
	pos := int(g.senderZipf(n).Uint64())
	if c.pendingRead[pos] != 0 { // sending reads the conversation
		c.pendingRead[pos] = 0
		g.pendingReads--
		g.cancelledRead()
	}
	recipients := make([]string, 0, n-1)
	for j, m := range c.members {
		if j != pos {
			recipients = append(recipients, g.users[m].id)
		}
	}
	var mentions []string
	if c.group && g.cfg.MentionRate > 0 && g.r.Float64() < g.cfg.MentionRate {
		k := 1 + g.r.IntN(min(3, len(recipients)))
		mentions = make([]string, 0, k)
		for len(mentions) < k {
			if m := recipients[g.r.IntN(len(recipients))]; !slices.Contains(mentions, m) {
				mentions = append(mentions, m)
			}
		}
	}
	g.messageSeq++
	msg := g.id("-m", g.messageSeq)
	e := &event.Event{Type: event.TypeMessage, App: c.app, Conversation: c.id, Message: msg,
		Sender: g.users[c.members[pos]].id, Recipients: recipients, Mentions: mentions, Preview: g.preview()}
	g.stamp(e, now)
	c.last = msg

	if p := g.cfg.ReadProbability; p > 0 {
		ns := now.UnixNano()
		for j := range c.members {
			if j == pos || c.pendingRead[j] != 0 || g.r.Float64() >= p {
				continue
			}
			t := task{due: ns + g.readDelay(), kind: taskRead, conv: ci, pos: int32(j)}
			if g.r.Float64() < g.cfg.PartialReadRate {
				t.upto = msg
			}
			c.pendingRead[j] = g.schedule(t)
			g.pendingReads++
		}
	}
	return e
}

// cancelledRead counts a read left in the queue that will not be emitted,
// and drops such reads once they are half of the queue, so that the queue
// stays about as long as the reads pending.
func (g *Generator) cancelledRead() {
	g.staleReads++
	if g.staleReads < 1024 || g.staleReads < len(g.q)/2 {
		return
	}
	g.q.filter(func(t *task) bool {
		return t.kind != taskRead || g.convs[t.conv].pendingRead[t.pos] == t.seq
	})
	g.staleReads = 0
}

// senderZipf returns the Zipf draw of a sender's position among n members.
func (g *Generator) senderZipf(n int) *rand.Zipf {
	z, ok := g.memberZipf[n]
	if !ok {
		z = rand.NewZipf(g.r, g.cfg.ZipfS, 1, uint64(n-1))
		g.memberZipf[n] = z
	}
	return z
}

// readDelay draws a read delay in nanoseconds: log-normal around the
// median, capped, times TimeScale.
func (g *Generator) readDelay() int64 {
	d := float64(g.cfg.ReadDelay) * math.Exp(g.cfg.ReadDelaySigma*g.r.NormFloat64())
	return int64(min(d, float64(g.cfg.ReadDelayMax)) * g.scale)
}

func (g *Generator) presence(now time.Time) *event.Event {
	u := &g.users[g.userZipf.Uint64()]
	d := g.r.IntN(len(u.presence))
	bit := uint8(1) << d
	status := event.StatusOnline
	switch {
	case u.online&bit == 0:
		u.online |= bit
	case g.r.Float64() < 0.2:
		status = event.StatusOffline
		u.online &^= bit
	default:
		status = event.StatusHeartbeat
	}
	e := &event.Event{Type: event.TypePresence, App: u.app, User: u.id, Status: status, Device: u.presence[d]}
	g.stamp(e, now)
	return e
}

// churn removes a device's push token and schedules the registration of its
// new token right after.
func (g *Generator) churn(now time.Time) *event.Event {
	ui := g.withDevices[g.r.IntN(len(g.withDevices))]
	u := &g.users[ui]
	d := &u.devices[g.r.IntN(len(u.devices))]
	e := &event.Event{Type: event.TypeDeviceRemoved, App: u.app, User: u.id, Platform: d.platform, Token: d.token}
	g.stamp(e, now)
	delete(g.tokenUser, d.token)
	d.token = g.token(d.platform)
	g.tokenUser[d.token] = ui
	g.schedule(task{due: now.UnixNano(), kind: taskRegister, ev: &event.Event{Type: event.TypeDeviceRegistered,
		App: u.app, User: u.id, Platform: d.platform, Token: d.token, Locale: u.locale}})
	return e
}

func (g *Generator) maybeDuplicate(e *event.Event, now int64) {
	if g.cfg.DuplicateRate > 0 && g.r.Float64() < g.cfg.DuplicateRate {
		g.schedule(task{due: now + int64(g.r.Float64()*float64(time.Second)*g.scale), kind: taskDuplicate, ev: e})
	}
}

func (g *Generator) schedule(t task) uint64 {
	g.taskSeq++
	t.seq = g.taskSeq
	g.q.push(t)
	return t.seq
}

// stamp gives e its version, a new id and the time now.
func (g *Generator) stamp(e *event.Event, now time.Time) {
	g.eventSeq++
	e.V = event.Version
	e.ID = g.id("-e", g.eventSeq)
	e.TS = now.UnixMilli()
}

func (g *Generator) id(infix string, n uint64) string {
	b := append(g.idBuf[:0], g.cfg.IDPrefix...)
	b = append(b, infix...)
	b = strconv.AppendUint(b, n, 10)
	g.idBuf = b
	return string(b)
}

const tokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// token draws a push token shaped like the platform's: 64 hex digits for
// APNs, "<instance id>:APA91b<...>" of 163 characters for FCM.
func (g *Generator) token(platform string) string {
	if platform == event.PlatformAPNs {
		return fmt.Sprintf("%016x%016x%016x%016x", g.r.Uint64(), g.r.Uint64(), g.r.Uint64(), g.r.Uint64())
	}
	b := make([]byte, 0, 163)
	for range 11 {
		b = append(b, tokenChars[g.r.IntN(len(tokenChars))])
	}
	b = append(b, ":APA91b"...)
	for range 145 {
		b = append(b, tokenChars[g.r.IntN(len(tokenChars))])
	}
	return string(b)
}

// preview draws a short message text, some of it outside ASCII.
func (g *Generator) preview() string {
	n := 1 + g.r.IntN(12)
	var b strings.Builder
	b.Grow(8 * n)
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[g.r.IntN(len(words))])
	}
	return b.String()
}

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
