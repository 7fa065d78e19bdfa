package event_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/event"
)

const okMessage = `{"v":1,"type":"message.sent","id":"e1","ts":1767225600000,"app":"chat",
 "conversation":"c1","message":"m1","sender":"alice","recipients":["bob","carol","bob"],
 "mentions":["bob"],"preview":"hi"}`

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		in    string
		check func(t *testing.T, e *event.Event)
	}{
		{"message", okMessage, func(t *testing.T, e *event.Event) {
			if e.Type != event.TypeMessage || e.Conversation != "c1" || e.Sender != "alice" || e.Preview != "hi" {
				t.Errorf("decoded %+v", e)
			}
			if strings.Join(e.Recipients, ",") != "bob,carol" {
				t.Errorf("recipients not de-duplicated: %v", e.Recipients)
			}
			if e.RoutingKey() != "c1" {
				t.Errorf("routing key %q", e.RoutingKey())
			}
		}},
		{"read default app", `{"v":1,"type":"conversation.read","id":"e2","ts":1767225600000,"conversation":"c1","user":"bob","upto":"m1"}`,
			func(t *testing.T, e *event.Event) {
				if e.App != event.DefaultApp || e.UpTo != "m1" || e.RoutingKey() != "c1" {
					t.Errorf("decoded %+v", e)
				}
			}},
		{"presence", `{"v":1,"type":"presence","id":"e3","ts":1767225600000,"user":"bob","status":"online","device":"phone-1"}`,
			func(t *testing.T, e *event.Event) {
				if e.Status != event.StatusOnline || e.RoutingKey() != "bob" {
					t.Errorf("decoded %+v", e)
				}
			}},
		{"device", `{"v":1,"type":"device.registered","id":"e4","ts":1767225600000,"user":"bob","platform":"apns","token":"ab12cd","locale":"de-DE"}`,
			func(t *testing.T, e *event.Event) {
				if e.Platform != "apns" || e.Token != "ab12cd" || e.Locale != "de-DE" {
					t.Errorf("decoded %+v", e)
				}
			}},
		{"prefs", `{"v":1,"type":"prefs.updated","id":"e5","ts":1767225600000,"user":"bob","time_zone":"Europe/Berlin",
			"quiet_hours":{"start":"22:00","end":"07:30"},"reminder_delay_s":120,"conversations":{"c1":"muted","c2":"mentions"}}`,
			func(t *testing.T, e *event.Event) {
				if *e.TimeZone != "Europe/Berlin" || e.QuietHours.End != "07:30" || *e.ReminderDelayS != 120 || e.Conversations["c1"] != "muted" {
					t.Errorf("decoded %+v", e)
				}
			}},
		{"unknown fields are ignored", `{"v":1,"type":"presence","id":"e6","ts":1767225600000,"user":"bob","status":"heartbeat","extra":{"a":[1,2]}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := event.Decode([]byte(tt.in))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	base := func(extra string) string {
		return `{"v":1,"id":"e1","ts":1767225600000,` + extra + `}`
	}
	tests := []struct {
		name   string
		in     string
		reason event.Reason
		field  string
	}{
		{"truncated", `{"v":1,"type":"presence"`, event.ReasonInvalidJSON, ""},
		{"not an object", `[1,2]`, event.ReasonInvalidJSON, ""},
		{"null", `null`, event.ReasonInvalidJSON, ""},
		{"empty", ``, event.ReasonInvalidJSON, ""},
		{"invalid utf8", "{\"v\":1,\"type\":\"presence\",\"id\":\"\xff\"}", event.ReasonInvalidUTF8, ""},
		{"too large", `{"v":1,"preview":"` + strings.Repeat("x", event.MaxEventBytes) + `"}`, event.ReasonTooLarge, ""},
		{"no version", `{"type":"presence","id":"e1","ts":1767225600000,"user":"u","status":"online"}`, event.ReasonMissingField, "v"},
		{"version 2", `{"v":2,"type":"presence","id":"e1","ts":1767225600000,"user":"u","status":"online"}`, event.ReasonVersion, "v"},
		{"version as string", `{"v":"1","type":"presence"}`, event.ReasonInvalidField, "v"},
		{"unknown type", base(`"type":"message.deleted"`), event.ReasonUnknownType, "type"},
		{"no type", base(`"user":"u"`), event.ReasonMissingField, "type"},
		{"no id", `{"v":1,"type":"presence","ts":1767225600000,"user":"u","status":"online"}`, event.ReasonMissingField, "id"},
		{"ts in seconds", `{"v":1,"type":"presence","id":"e","ts":1767225600,"user":"u","status":"online"}`, event.ReasonInvalidField, "ts"},
		{"ts wrong type", `{"v":1,"type":"presence","id":"e","ts":"now","user":"u","status":"online"}`, event.ReasonInvalidField, "ts"},
		{"duplicate key", base(`"type":"presence","user":"u","status":"online","user":"v"`), event.ReasonDuplicateKey, "user"},
		{"duplicate empty key", base(`"type":"prefs.updated","user":"u","":{"":"","":"0"},"conversations":{"c":"muted"}`), event.ReasonDuplicateKey, ""},
		{"case after a duplicate empty key", base(`"type":"prefs.updated","user":"u","":{"":"","":"0"},"ConversAtions":{"c":"muted"}`), event.ReasonDuplicateKey, ""},
		{"escaped duplicate key", base(`"type":"presence","user":"u","status":"online","\u0075ser":"v"`), event.ReasonDuplicateKey, "user"},
		{"nested duplicate key", base(`"type":"prefs.updated","user":"u","conversations":{"c":"all","c":"muted"}`), event.ReasonDuplicateKey, "c"},
		{"field name casing", base(`"Type":"presence","user":"u","status":"online"`), event.ReasonInvalidField, "Type"},
		{"long s folding", base(`"type":"presence","user":"u","ſtatus":"online"`), event.ReasonInvalidField, "ſtatus"},
		{"nested casing", base(`"type":"prefs.updated","user":"u","quiet_hours":{"Start":"22:00","end":"07:00"}`), event.ReasonInvalidField, "Start"},
		{"message without recipients", base(`"type":"message.sent","conversation":"c","message":"m","sender":"s","recipients":[]`), event.ReasonMissingField, "recipients"},
		{"message without sender", base(`"type":"message.sent","conversation":"c","message":"m","recipients":["a"]`), event.ReasonMissingField, "sender"},
		{"recipient wrong type", base(`"type":"message.sent","conversation":"c","message":"m","sender":"s","recipients":[1]`), event.ReasonInvalidField, "recipients"},
		{"bad id char", base(`"type":"message.sent","conversation":"c|x","message":"m","sender":"s","recipients":["a"]`), event.ReasonInvalidField, "conversation"},
		{"brace in id", base(`"type":"conversation.read","conversation":"{c}","user":"u"`), event.ReasonInvalidField, "conversation"},
		{"long id", base(`"type":"conversation.read","conversation":"` + strings.Repeat("c", 129) + `","user":"u"`), event.ReasonFieldTooLarge, "conversation"},
		{"long preview", base(`"type":"message.sent","conversation":"c","message":"m","sender":"s","recipients":["a"],"preview":"` + strings.Repeat("é", 2049) + `"`), event.ReasonFieldTooLarge, "preview"},
		{"bad status", base(`"type":"presence","user":"u","status":"away"`), event.ReasonInvalidField, "status"},
		{"bad platform", base(`"type":"device.registered","user":"u","platform":"wns","token":"t"`), event.ReasonInvalidField, "platform"},
		{"token with space", base(`"type":"device.registered","user":"u","platform":"fcm","token":"a b"`), event.ReasonInvalidField, "token"},
		{"locale with markup", base(`"type":"device.registered","user":"u","platform":"fcm","token":"t","locale":"<script>x</script>"`), event.ReasonInvalidField, "locale"},
		{"locale not a tag", base(`"type":"device.registered","user":"u","platform":"fcm","token":"t","locale":"english please"`), event.ReasonInvalidField, "locale"},
		{"locale bad region", base(`"type":"device.registered","user":"u","platform":"fcm","token":"t","locale":"de-DEU1"`), event.ReasonInvalidField, "locale"},
		{"no token", base(`"type":"device.removed","user":"u","platform":"fcm"`), event.ReasonMissingField, "token"},
		{"bad time zone", base(`"type":"prefs.updated","user":"u","time_zone":"Mars/Olympus"`), event.ReasonInvalidField, "time_zone"},
		{"path time zone", base(`"type":"prefs.updated","user":"u","time_zone":"../../etc/passwd"`), event.ReasonInvalidField, "time_zone"},
		{"bad quiet hours", base(`"type":"prefs.updated","user":"u","quiet_hours":{"start":"25:00","end":"07:00"}`), event.ReasonInvalidField, "quiet_hours.start"},
		{"negative delay", base(`"type":"prefs.updated","user":"u","reminder_delay_s":-1`), event.ReasonInvalidField, "reminder_delay_s"},
		{"bad mode", base(`"type":"prefs.updated","user":"u","conversations":{"c":"loud"}`), event.ReasonInvalidField, "conversations"},
		{"empty prefs", base(`"type":"prefs.updated","user":"u"`), event.ReasonMissingField, "time_zone"},
		{"long title", base(`"type":"message.sent","conversation":"c","message":"m","sender":"s","recipients":["a"],"conversation_title":"` + strings.Repeat("t", 1025) + `"`), event.ReasonFieldTooLarge, "conversation_title"},
		{"topic with a slash", base(`"type":"device.registered","user":"u","platform":"apns","token":"t","topic":"com.example/app"`), event.ReasonInvalidField, "topic"},
		{"bad previews", base(`"type":"prefs.updated","user":"u","previews":"some"`), event.ReasonInvalidField, "previews"},
		{"opened without stage", base(`"type":"notification.opened","user":"u","episode":"1-0"`), event.ReasonMissingField, "stage"},
		{"opened stage too high", base(`"type":"notification.opened","user":"u","episode":"1-0","stage":101`), event.ReasonInvalidField, "stage"},
		{"opened without episode", base(`"type":"notification.opened","user":"u","stage":1`), event.ReasonMissingField, "episode"},
		{"bad app", base(`"type":"presence","user":"u","status":"online","app":"a|b"`), event.ReasonInvalidField, "app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := event.Decode([]byte(tt.in))
			var e *event.Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode error = %v, want an *event.Error", err)
			}
			if e.Reason != tt.reason || e.Field != tt.field {
				t.Errorf("got reason %q field %q (%v), want %q %q", e.Reason, e.Field, err, tt.reason, tt.field)
			}
			if event.ReasonOf(err) != tt.reason {
				t.Errorf("ReasonOf = %q", event.ReasonOf(err))
			}
		})
	}
}

func TestParseClock(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"00:00": 0, "07:30": 450, "23:59": 1439} {
		got, err := event.ParseClock(in)
		if err != nil || got != want {
			t.Errorf("ParseClock(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "7:30", "24:00", "12:60", "+1:00", "12:-1", "ab:cd", "12:345"} {
		if _, err := event.ParseClock(in); err == nil {
			t.Errorf("ParseClock(%q) accepted", in)
		}
	}
}

// FuzzDecode checks that the decoder never panics, that whatever it accepts
// is valid and survives an encode/decode round trip unchanged, and that it
// agrees with encoding/json on which documents are JSON.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(okMessage))
	f.Add([]byte(`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u","quiet_hours":{"start":"22:00","end":"07:00"}}`))
	f.Add([]byte(`{"v":1,"type":"presence","id":"e","ts":1767225600000,"user":"u","status":"online","user":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := event.Decode(data)
		if err != nil {
			var ee *event.Error
			if !errors.As(err, &ee) || ee.Reason == "" {
				t.Fatalf("error %v is not an *event.Error with a reason", err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("marshal accepted event: %v", err)
		}
		e2, err := event.Decode(again)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", again, err)
		}
		if err := schemaValid(t, data); err != nil {
			t.Fatalf("decoder accepted what the JSON Schema rejects: %q: %v", data, err)
		}
		b1, _ := json.Marshal(e)
		b2, _ := json.Marshal(e2)
		if string(b1) != string(b2) {
			t.Fatalf("round trip changed the event:\n%s\n%s", b1, b2)
		}
	})
}

// Locales are BCP 47 tags; Java's and Android's underscores are taken and
// stored as hyphens.
func TestDecodeLocales(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"de-DE": "de-DE", "en_US": "en-US", "zh-Hant-TW": "zh-Hant-TW", "sr-Latn": "sr-Latn",
		"es-419": "es-419", "en-GB-oxendict": "en-GB-oxendict", "x-klingon": "x-klingon", "fr": "fr"} {
		e, err := event.Decode([]byte(`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"fcm","token":"t","locale":"` + in + `"}`))
		if err != nil {
			t.Errorf("locale %q: %v", in, err)
			continue
		}
		if e.Locale != want {
			t.Errorf("locale %q stored as %q, want %q", in, e.Locale, want)
		}
	}
}
