package event_test

import (
	"strings"
	"testing"

	"github.com/nudgehq/nudge/event"
)

// Realistic payloads, as a producer encodes them (encoding/json field
// order, ids and previews of typical sizes).
var benchPayloads = []struct{ name, json string }{
	{"message-1-recipient", `{"v":1,"type":"message.sent","id":"evt-01J9Z6Q4M8K2","ts":1767225600000,"app":"chat",` +
		`"conversation":"dm-4711-9052","message":"msg-01J9Z6Q4M8K2","sender":"user-4711","recipients":["user-9052"],` +
		`"preview":"see you at the standup in five minutes"}`},
	{"message-10-recipients", `{"v":1,"type":"message.sent","id":"evt-01J9Z6Q4M8K3","ts":1767225600000,"app":"chat",` +
		`"conversation":"grp-engineering-berlin","message":"msg-01J9Z6Q4M8K3","sender":"user-4711",` +
		`"recipients":["user-4711","user-9052","user-1138","user-2187","user-3263","user-5150","user-6502","user-7474","user-8080","user-9000"],` +
		`"mentions":["user-9052","user-2187","user-8080"],` +
		`"preview":"@Ana @Ben @Eve the release branch is cut; please check your PRs before 3pm, thanks!"}`},
	{"read", `{"v":1,"type":"conversation.read","id":"evt-01J9Z6Q4M8K4","ts":1767225600000,"app":"chat",` +
		`"conversation":"grp-engineering-berlin","user":"user-9052","upto":"msg-01J9Z6Q4M8K3"}`},
	{"presence", `{"v":1,"type":"presence","id":"evt-01J9Z6Q4M8K5","ts":1767225600000,"app":"chat",` +
		`"user":"user-9052","status":"heartbeat","device":"iphone-15-a1b2"}`},
	{"device-registered", `{"v":1,"type":"device.registered","id":"evt-01J9Z6Q4M8K6","ts":1767225600000,"app":"chat",` +
		`"user":"user-9052","platform":"fcm","token":"` + fcmToken + `","locale":"de-DE"}`},
}

// A token of the length and alphabet of a real FCM registration token.
var fcmToken = "dXNlci05MDUyOmFwcGxlLWRldmljZS10b2tlbg:APA91bH" + strings.Repeat("x7Kq-Z_3mN9pLw2R", 7)

// BenchmarkDecode measures event.Decode (size limit, UTF-8 check, JSON
// unmarshal, the duplicate/case key scan and Validate) on one payload per
// op, as ingest calls it for every stream entry.
func BenchmarkDecode(b *testing.B) {
	for _, p := range benchPayloads {
		b.Run(p.name, func(b *testing.B) {
			data := []byte(p.json)
			if _, err := event.Decode(data); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := event.Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeInto is BenchmarkDecode into a reused Event: the cost
// without the Event allocation itself.
func BenchmarkDecodeInto(b *testing.B) {
	for _, p := range benchPayloads {
		b.Run(p.name, func(b *testing.B) {
			data := []byte(p.json)
			var e event.Event
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := event.DecodeInto(data, &e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidate measures event.Validate alone on an already decoded
// event (what a Go producer pays per event before publishing).
func BenchmarkValidate(b *testing.B) {
	for _, p := range benchPayloads {
		b.Run(p.name, func(b *testing.B) {
			orig, err := event.Decode([]byte(p.json))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				e := *orig
				if err := event.Validate(&e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeReject measures how fast the decoder turns bad input
// down: ingest pays this for every dead-lettered entry.
func BenchmarkDecodeReject(b *testing.B) {
	tests := []struct {
		name   string
		in     string
		reason event.Reason
	}{
		{"truncated", `{"v":1,"type":"message.sent","id":"evt-1","ts":1767225600000,"conversation":"c","mess`, event.ReasonInvalidJSON},
		{"not-json", "GET / HTTP/1.1\r\nHost: nudge\r\n\r\n", event.ReasonInvalidJSON},
		{"invalid-utf8", "{\"v\":1,\"type\":\"presence\",\"id\":\"e\xff\",\"ts\":1767225600000,\"user\":\"u\",\"status\":\"online\"}", event.ReasonInvalidUTF8},
		{"duplicate-key", `{"v":1,"type":"presence","id":"e","ts":1767225600000,"user":"u","status":"online","user":"w"}`, event.ReasonDuplicateKey},
		{"unknown-type", `{"v":1,"type":"message.edited","id":"e","ts":1767225600000,"user":"u"}`, event.ReasonUnknownType},
		{"1MB", `{"v":1,"preview":"` + strings.Repeat("x", 1<<20) + `"}`, event.ReasonTooLarge},
		{"60KB-preview", `{"v":1,"type":"message.sent","id":"e","ts":1767225600000,"conversation":"c","message":"m","sender":"s",` +
			`"recipients":["r"],"preview":"` + strings.Repeat("x", 60<<10) + `"}`, event.ReasonFieldTooLarge},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			data := []byte(tt.in)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				_, err := event.Decode(data)
				if r := event.ReasonOf(err); r != tt.reason {
					b.Fatalf("reason %q (%v), want %q", r, err, tt.reason)
				}
			}
		})
	}
}
