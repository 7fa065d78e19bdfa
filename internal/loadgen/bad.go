package loadgen

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nudgehq/nudge/event"
)

// badKinds are the malformed entries the generator draws, each with the
// dead-letter reason a consumer gives it. Each corrupts the JSON of a
// message that is never applied, so it changes no state a later event
// refers to.
var badKinds = []struct {
	reason event.Reason
	make   func(g *Generator, e *event.Event) []byte
}{
	{event.ReasonInvalidJSON, func(g *Generator, e *event.Event) []byte { // truncated
		b := marshal(e)
		cut := 1 + g.r.IntN(len(b)-1)
		for !utf8.RuneStart(b[cut]) {
			cut--
		}
		return b[:cut]
	}},
	{event.ReasonInvalidField, func(g *Generator, e *event.Event) []byte { // a wrong type
		b := marshal(e)
		if g.r.IntN(2) == 0 {
			ts := strconv.FormatInt(e.TS, 10)
			return bytes.Replace(b, []byte(`"ts":`+ts), []byte(`"ts":"`+ts+`"`), 1)
		}
		// A string where a list belongs; the list moves to a field nobody reads.
		return bytes.Replace(b, []byte(`"recipients":[`), []byte(`"recipients":"all","x_recipients":[`), 1)
	}},
	{event.ReasonInvalidUTF8, func(g *Generator, e *event.Event) []byte {
		return bytes.Replace(marshal(e), []byte(`"preview":"`), []byte("\"preview\":\"caf\xe9 \xff\xfe"), 1)
	}},
	{event.ReasonVersion, func(g *Generator, e *event.Event) []byte {
		e.V = 2 + g.r.IntN(8)
		return marshal(e)
	}},
	{event.ReasonUnknownType, func(g *Generator, e *event.Event) []byte {
		e.Type = unknownTypes[g.r.IntN(len(unknownTypes))]
		return marshal(e)
	}},
	{event.ReasonMissingField, func(g *Generator, e *event.Event) []byte {
		if g.r.IntN(2) == 0 {
			e.Recipients = nil
		} else {
			e.Sender = ""
		}
		return marshal(e)
	}},
	{event.ReasonDuplicateKey, func(g *Generator, e *event.Event) []byte {
		return bytes.Replace(marshal(e), []byte(`{"v":1,`), []byte(`{"v":1,"v":1,`), 1)
	}},
	{event.ReasonTooLarge, func(g *Generator, e *event.Event) []byte {
		e.Preview = strings.Repeat("x", event.MaxEventBytes)
		return marshal(e)
	}},
}

var unknownTypes = []string{"message.edited", "typing", "message.sent.v2", "Message.Sent"}

// bad draws a malformed entry routed to a real conversation's shard.
func (g *Generator) bad(now time.Time) Item {
	c := &g.convs[g.convZipf.Uint64()]
	e := &event.Event{Type: event.TypeMessage, App: c.app, Conversation: c.id,
		Sender: g.users[c.members[0]].id, Recipients: []string{g.users[c.members[1]].id}, Preview: g.preview()}
	g.stamp(e, now)
	e.Message = g.id("-b", g.eventSeq)
	k := badKinds[g.r.IntN(len(badKinds))]
	return Item{Kind: KindBad, Raw: k.make(g, e), RoutingKey: c.id, Reason: k.reason}
}

func marshal(e *event.Event) []byte {
	b, err := json.Marshal(e)
	if err != nil { // an Event of strings, numbers and slices always encodes
		panic("loadgen: encode event: " + err.Error())
	}
	return b
}
