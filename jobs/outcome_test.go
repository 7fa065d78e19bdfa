package jobs

import (
	"testing"
	"time"

	"github.com/nudgehq/nudge/counters"
)

func TestOutcomeMember(t *testing.T) {
	at := time.UnixMilli(1767225600123)
	for _, o := range []Outcome{
		{Metric: counters.RemindersSent, At: at},
		{Metric: counters.RemindersSuppr, Reason: ReasonMentionsOnly, At: at},
	} {
		got, ok := ParseOutcome(o.member())
		if !ok || got.Metric != o.Metric || got.Reason != o.Reason || !got.At.Equal(o.At) {
			t.Errorf("ParseOutcome(%q) = %+v, %v; want %+v", o.member(), got, ok, o)
		}
	}
	for _, m := range []string{doneMember, tokenDigest("fcm", "tok"), "!outcome:", "!outcome:x:y", "!outcome::r:1", "!outcome:m:r:z"} {
		if o, ok := ParseOutcome(m); ok {
			t.Errorf("ParseOutcome(%q) = %+v, want not an outcome", m, o)
		}
	}
}
