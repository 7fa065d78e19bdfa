package loadgen

// The events of the traffic: messages, reads, presence, token churn, and
// their ids, tokens and previews.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nudgehq/nudge/event"
)

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
