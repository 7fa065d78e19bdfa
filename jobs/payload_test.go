package jobs

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/hibiken/asynq"
)

// fuzzDecode checks decodeTask on one task: it either returns reminders
// with every field a handler relies on, or fails with ErrBadPayload; never
// a panic.
func fuzzDecode(t *testing.T, task *asynq.Task) {
	rs, err := decodeTask(task)
	if err != nil {
		if !errors.Is(err, ErrBadPayload) {
			t.Fatalf("error %v is not ErrBadPayload", err)
		}
		return
	}
	if len(rs) == 0 || len(rs) > maxBatch {
		t.Fatalf("accepted %d reminders", len(rs))
	}
	for _, r := range rs {
		if r.User == "" || r.Conversation == "" || r.Episode == "" || r.Stage < 1 || r.Due <= 0 || r.Shard < 0 || r.Defers < 0 || r.Tries < 0 {
			t.Fatalf("accepted %+v", r)
		}
	}
}

// FuzzDecodeReminder: the payload of a reminder alone.
func FuzzDecodeReminder(f *testing.F) {
	good, _ := json.Marshal(Reminder{Shard: 1, App: "a", User: "u", Conversation: "c", Episode: "1-0", Stage: 1, Due: 1767225600000})
	f.Add(good)
	f.Add([]byte(`{"user":"u"}`))
	f.Add([]byte(`{"shard":-1,"user":"u","conv":"c","ep":"e","stage":1,"due":1}`))
	f.Add([]byte(`{"user":"u","conv":"c","ep":"e","stage":1,"due":1,"tries":-1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzDecode(t, asynq.NewTask(TypeReminder, payload)) })
}

// FuzzDecodeBatch: the payload of a batch of reminders.
func FuzzDecodeBatch(f *testing.F) {
	r := Reminder{Shard: 1, App: "a", User: "u", Conversation: "c", Episode: "1-0", Stage: 1, Due: 1767225600000}
	good, _ := json.Marshal(batchPayload{Reminders: []Reminder{r, r}})
	f.Add(good)
	f.Add([]byte(`{"reminders":[]}`))
	f.Add([]byte(`{"reminders":[{"user":"u"}]}`))
	f.Add([]byte(`{"reminders":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzDecode(t, asynq.NewTask(TypeBatch, payload)) })
}
