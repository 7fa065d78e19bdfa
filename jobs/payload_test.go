package jobs

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/hibiken/asynq"
)

// FuzzDecodeReminder: a task payload either decodes into a reminder with
// every field a handler relies on, or fails with ErrBadPayload; never a
// panic.
func FuzzDecodeReminder(f *testing.F) {
	good, _ := json.Marshal(Reminder{Shard: 1, App: "a", User: "u", Conversation: "c", Episode: "1-0", Stage: 1, Due: 1767225600000})
	f.Add(good)
	f.Add([]byte(`{"user":"u"}`))
	f.Add([]byte(`{"shard":-1,"user":"u","conv":"c","ep":"e","stage":1,"due":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := decodeReminder(asynq.NewTask(TypeReminder, payload))
		if err != nil {
			if !errors.Is(err, ErrBadPayload) {
				t.Fatalf("error %v is not ErrBadPayload", err)
			}
			return
		}
		if r.User == "" || r.Conversation == "" || r.Episode == "" || r.Stage < 1 || r.Due <= 0 || r.Shard < 0 {
			t.Fatalf("accepted %+v", r)
		}
	})
}
