package ingest_test

import (
	"math/rand/v2"
	"strconv"

	"github.com/nudgehq/nudge/event"
)

// oracle computes the unread state a sequence of events must produce,
// independently of the Lua script, for comparison.
type oracle struct {
	cap    int
	recent map[string][]string // conversation -> message ids, newest first
	n      map[[2]string]int   // (user, conversation) -> unread
	last   map[[2]string]string
	seen   map[string]bool
}

func newOracle(recentCap int) *oracle {
	return &oracle{cap: recentCap, recent: map[string][]string{}, n: map[[2]string]int{}, last: map[[2]string]string{}, seen: map[string]bool{}}
}

func (o *oracle) apply(e *event.Event) {
	if o.seen[e.ID] {
		return
	}
	o.seen[e.ID] = true
	switch e.Type {
	case event.TypeMessage:
		r := append([]string{e.Message}, o.recent[e.Conversation]...)
		if len(r) > o.cap {
			r = r[:o.cap]
		}
		o.recent[e.Conversation] = r
		delete(o.n, [2]string{e.Sender, e.Conversation})
		for _, u := range e.Recipients {
			if u == e.Sender {
				continue
			}
			k := [2]string{u, e.Conversation}
			o.n[k]++
			o.last[k] = e.Message
		}
	case event.TypeRead:
		k := [2]string{e.User, e.Conversation}
		n, ok := o.n[k]
		if !ok {
			return
		}
		if e.UpTo == "" || e.UpTo == o.last[k] {
			delete(o.n, k)
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
			delete(o.n, k)
		}
	}
}

// traffic makes a random but repeatable sequence of messages and reads
// over a few users and conversations, with some events re-published.
func traffic(seed uint64, n int) []*event.Event {
	rng := rand.New(rand.NewPCG(seed, 1))
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6"}
	var out []*event.Event
	sent := map[string][]string{}
	lastTo := map[[2]string]string{} // (user, conv) -> last message to the user
	for i := 0; len(out) < n; i++ {
		conv := "c" + strconv.Itoa(rng.IntN(12))
		if rng.IntN(4) == 0 && len(sent[conv]) > 0 {
			user := users[rng.IntN(len(users))]
			upto := ""
			switch rng.IntN(3) {
			case 0:
				ms := sent[conv]
				upto = ms[rng.IntN(len(ms))]
			case 1:
				upto = lastTo[[2]string{user, conv}] // up to the newest: all read
			}
			out = append(out, read(conv, user, upto))
		} else {
			sender := users[rng.IntN(len(users))]
			var rcpt []string
			for _, u := range users {
				if rng.IntN(2) == 0 {
					rcpt = append(rcpt, u)
				}
			}
			if len(rcpt) == 0 {
				rcpt = []string{users[(rng.IntN(5)+1)%len(users)]}
			}
			id := "m" + strconv.Itoa(i)
			sent[conv] = append(sent[conv], id)
			for _, u := range rcpt {
				lastTo[[2]string{u, conv}] = id
			}
			out = append(out, msg(conv, id, sender, rcpt...))
		}
		if rng.IntN(20) == 0 { // a producer retry
			out = append(out, out[len(out)-1])
		}
	}
	return out
}
