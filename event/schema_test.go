package event_test

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/keys"
)

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	f, err := os.Open("../schema/event.v1.schema.json")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("event.v1.schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("event.v1.schema.json")
})

func schemaValid(t testing.TB, payload []byte) error {
	t.Helper()
	sch, err := compiled()
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}

// Every redis-cli example in docs/events.md is valid by the schema and the
// decoder, and goes to the shard its routing key picks.
func TestDocExamples(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ks := keys.New("nudge", 8)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "redis-cli XADD ") {
			continue
		}
		n++
		stream := strings.Trim(strings.Fields(line)[2], "'")
		_, payload, ok := strings.Cut(line, " event '")
		if !ok {
			t.Fatalf("cannot parse example %q", line)
		}
		payload = strings.TrimSuffix(payload, "'")
		if err := schemaValid(t, []byte(payload)); err != nil {
			t.Errorf("schema rejects doc example %s: %v", payload, err)
		}
		e, err := event.Decode([]byte(payload))
		if err != nil {
			t.Errorf("decoder rejects doc example %s: %v", payload, err)
			continue
		}
		if want := ks.Stream(ks.Shard(e.RoutingKey())); stream != want {
			t.Errorf("example of %s goes to %s, want %s", e.Type, stream, want)
		}
	}
	if n < 5 {
		t.Errorf("found %d examples in docs/events.md, want one per type", n)
	}
}

// The schema and the decoder agree on structure. (The decoder checks more
// than a schema can: UTF-8, duplicate keys, sizes in bytes, time zones.)
func TestSchemaAgreesWithDecoder(t *testing.T) {
	t.Parallel()
	cases := []string{
		okMessage,
		`{"v":1,"type":"conversation.read","id":"e","ts":1767225600000,"conversation":"c","user":"u"}`,
		`{"v":1,"type":"presence","id":"e","ts":1767225600000,"user":"u","status":"away"}`,
		`{"v":1,"type":"presence","id":"e","ts":1767225600,"user":"u","status":"online"}`,
		`{"v":2,"type":"presence","id":"e","ts":1767225600000,"user":"u","status":"online"}`,
		`{"v":1,"type":"message.sent","id":"e","ts":1767225600000,"conversation":"c","message":"m","sender":"s","recipients":[]}`,
		`{"v":1,"type":"message.sent","id":"e","ts":1767225600000,"conversation":"c|d","message":"m","sender":"s","recipients":["r"]}`,
		`{"v":1,"type":"device.removed","id":"e","ts":1767225600000,"user":"u","platform":"wns","token":"t"}`,
		`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"fcm","token":"t","locale":"en_US"}`,
		`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"fcm","token":"t","locale":"zh-Hant-TW"}`,
		`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"fcm","token":"t","locale":"<script>"}`,
		`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"fcm","token":"t","locale":""}`,
		`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"fcm","token":"t","locale":"de-DEU1"}`,
		`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u"}`,
		`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u","quiet_hours":{"start":"24:00","end":"07:00"}}`,
		`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u","conversations":{"c":"loud"}}`,
		`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u","reminder_delay_s":0}`,
		`{"v":1,"type":"nope","id":"e","ts":1767225600000}`,
		`{"v":1,"type":"notification.opened","id":"e","ts":1767225600000,"user":"u","episode":"1767225600000-0","stage":2,"platform":"apns"}`,
		`{"v":1,"type":"notification.opened","id":"e","ts":1767225600000,"user":"u","episode":"1767225600000-0"}`,
		`{"v":1,"type":"notification.opened","id":"e","ts":1767225600000,"user":"u","episode":"1767225600000-0","stage":0}`,
		`{"v":1,"type":"notification.opened","id":"e","ts":1767225600000,"user":"u","episode":"e|1","stage":1}`,
		`{"v":1,"type":"notification.opened","id":"e","ts":1767225600000,"user":"u","episode":"e1","stage":1,"platform":"wns"}`,
		`{"v":1,"type":"message.sent","id":"e","ts":1767225600000,"conversation":"c","message":"m","sender":"s","recipients":["r"],"conversation_title":"Team"}`,
		`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"apns","token":"t","topic":"com.example.chat.beta"}`,
		`{"v":1,"type":"device.registered","id":"e","ts":1767225600000,"user":"u","platform":"apns","token":"t","topic":"com.example/chat"}`,
		`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u","previews":"hidden"}`,
		`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u","previews":""}`,
		`{"v":1,"type":"prefs.updated","id":"e","ts":1767225600000,"user":"u","previews":"some"}`,
		`{"v":1,"type":"presence","id":"e","ts":1767225600000,"user":"u","status":"online","app":"bad app"}`,
	}
	for _, c := range cases {
		_, derr := event.Decode([]byte(c))
		serr := schemaValid(t, []byte(c))
		if (derr == nil) != (serr == nil) {
			t.Errorf("disagree on %s\n decoder: %v\n  schema: %v", c, derr, serr)
		}
	}
}
