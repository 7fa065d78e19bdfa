// Package jobs schedules and runs unread-message reminders as asynq tasks.
//
// When ingest opens an unread episode, the Scheduler enqueues the first
// reminder with a TaskID derived from (user, conversation, episode, stage),
// so a redelivered batch never schedules twice. When the episode's delay
// has passed, the Worker re-checks everything at send time (still unread,
// not muted, offline, outside quiet hours, under the rate limit), gathers
// other reminders of the user due soon into one digest, pushes to the
// user's devices, and schedules the next stage of the ladder.
package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/keys"
)

// TypeReminder is the asynq task type of a reminder.
const TypeReminder = "nudge:reminder"

// Reminder is the payload of a reminder task.
type Reminder struct {
	Shard        int    `json:"shard"`
	App          string `json:"app"`
	User         string `json:"user"`
	Conversation string `json:"conv"`
	Episode      string `json:"ep"`
	Stage        int    `json:"stage"`  // 1 for the first reminder
	Due          int64  `json:"due"`    // unix ms; never sent before
	Defers       int    `json:"defers"` // how many times it was put off
}

// ID names the reminder of one stage of one episode: the sent-devices set
// and the task ids derive from it.
func (r Reminder) ID() string {
	return r.User + "|" + r.Conversation + "|" + r.Episode + "|" + strconv.Itoa(r.Stage)
}

// TaskID is the asynq task id: the reminder's id, plus the deferral count
// for a reminder that was put off (the original task is still being
// processed when its follow-up is enqueued).
func (r Reminder) TaskID() string {
	if r.Defers == 0 {
		return "rem:" + r.ID()
	}
	return "rem:" + r.ID() + "|d" + strconv.Itoa(r.Defers)
}

// DueTime returns when the reminder is due.
func (r Reminder) DueTime() time.Time { return time.UnixMilli(r.Due) }

// ErrBadPayload is returned for a task whose payload is not a Reminder.
var ErrBadPayload = errors.New("jobs: bad reminder payload")

// Task encodes r as an asynq task.
func (r Reminder) Task() *asynq.Task {
	b, _ := json.Marshal(r)
	return asynq.NewTask(TypeReminder, b)
}

func decodeReminder(t *asynq.Task) (Reminder, error) {
	var r Reminder
	if err := json.Unmarshal(t.Payload(), &r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	if r.User == "" || r.Conversation == "" || r.Episode == "" || r.Stage < 1 || r.Due <= 0 || r.Shard < 0 {
		return r, fmt.Errorf("%w: missing fields in %s", ErrBadPayload, t.Payload())
	}
	return r, nil
}

// Config configures the Scheduler and the Worker. The zero value of each
// field means its default.
type Config struct {
	// Keyspace names the keys; it must match ingest's. Default keys.New("", 0).
	Keyspace keys.Keyspace
	// Queue is the asynq queue of reminders. Default "reminders".
	Queue string
	// IngestGroup is ingest's consumer group: a reminder that finds no
	// episode asks it whether the opening message has been applied yet.
	// Default ingest.DefaultGroup.
	IngestGroup string
	// Stages are the delays of the reminder ladder: the first counts from
	// the episode's opening (a user's reminder_delay_s replaces it), each
	// next one from the previous reminder sent. Default 5m, 1h, 24h.
	Stages []time.Duration
	// DigestWindow: reminders of the same user coming due within this
	// window of one another are sent as one digest push. Default 30s; a
	// negative value turns digests off.
	DigestWindow time.Duration
	// RateLimit is the most reminders pushed to one user per RateWindow;
	// more are put off to the next window. Default 10 per hour.
	RateLimit  int
	RateWindow time.Duration
	// Retention keeps completed tasks (and so their ids) this long, so a
	// redelivered batch cannot schedule a reminder that already ran.
	// Default 1h. The sent-devices sets guard against duplicates beyond it.
	Retention time.Duration
	// SentTTL is how long the record of the devices a reminder reached is
	// kept. Default 48h.
	SentTTL time.Duration
	// MaxRetry is how many times a failing reminder is retried before asynq
	// archives it. Default 12.
	MaxRetry int
	// Metrics, if set, receives the Prometheus collectors of the Scheduler
	// and the Worker (nudge_reminders_total, nudge_push_*, ...). Default none.
	Metrics prometheus.Registerer
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("jobs: bad config")

func (c Config) withDefaults() (Config, error) {
	if c.Keyspace.Prefix == "" || c.Keyspace.Shards == 0 {
		c.Keyspace = keys.New(c.Keyspace.Prefix, c.Keyspace.Shards)
	}
	if c.Queue == "" {
		c.Queue = "reminders"
	}
	if c.IngestGroup == "" {
		c.IngestGroup = ingest.DefaultGroup
	}
	if len(c.Stages) == 0 {
		c.Stages = []time.Duration{5 * time.Minute, time.Hour, 24 * time.Hour}
	}
	if c.DigestWindow == 0 {
		c.DigestWindow = 30 * time.Second
	}
	if c.RateLimit == 0 {
		c.RateLimit = 10
	}
	if c.RateWindow == 0 {
		c.RateWindow = time.Hour
	}
	if c.Retention == 0 {
		c.Retention = time.Hour
	}
	if c.SentTTL == 0 {
		c.SentTTL = 48 * time.Hour
	}
	if c.MaxRetry == 0 {
		c.MaxRetry = 12
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	for i, d := range c.Stages {
		if d <= 0 {
			return c, fmt.Errorf("%w: Stages[%d] = %s: want a positive delay", ErrConfig, i, d)
		}
	}
	switch {
	case c.RateLimit < 0:
		return c, fmt.Errorf("%w: RateLimit %d: want at least 1", ErrConfig, c.RateLimit)
	case c.RateWindow < time.Second:
		return c, fmt.Errorf("%w: RateWindow %s: want at least 1s", ErrConfig, c.RateWindow)
	case c.SentTTL < c.Retention:
		return c, fmt.Errorf("%w: SentTTL %s: want at least Retention %s", ErrConfig, c.SentTTL, c.Retention)
	}
	return c, nil
}

// ParseStages parses a ladder setting such as "5m,1h,24h".
func ParseStages(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, p := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("stages: %w", err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("stages: %q: want a positive delay", p)
		}
		out = append(out, d)
	}
	return out, nil
}
