package jobs

import (
	"strconv"
	"strings"
	"time"
)

// Outcome is how a reminder finished: the counter metric and reason it was
// counted with, and when. The worker records it in the reminder's sent set
// (keys.Sent) as the member "!outcome:<metric>:<reason>:<unix ms>", in the
// same script step as the "!done" mark, so a finished reminder always has
// exactly one. It is evidence for checks (the chaos run) and for whoever
// asks why a reminder was or was not pushed.
type Outcome struct {
	// Metric is counters.RemindersSent, RemindersFailed, RemindersSuppr or
	// RemindersCancel.
	Metric string
	// Reason is a Reason* constant for a suppressed reminder, else "".
	Reason string
	// At is when the worker finished the reminder, to the millisecond.
	At time.Time
}

const outcomePrefix = "!outcome:"

func (o Outcome) member() string {
	return outcomePrefix + o.Metric + ":" + o.Reason + ":" + strconv.FormatInt(o.At.UnixMilli(), 10)
}

// ParseOutcome reads the outcome member of a sent set; ok is false for any
// other member (a device digest, "!done").
func ParseOutcome(member string) (o Outcome, ok bool) {
	rest, ok := strings.CutPrefix(member, outcomePrefix)
	if !ok {
		return o, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 || parts[0] == "" {
		return o, false
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return o, false
	}
	return Outcome{Metric: parts[0], Reason: parts[1], At: time.UnixMilli(ms)}, true
}
