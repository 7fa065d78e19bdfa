package ingest_test

import (
	"math/rand/v2"
	"strconv"

	"github.com/nudgehq/nudge/event"
)

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
