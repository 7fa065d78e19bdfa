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
	"cmp"
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

// TypeBatch is the asynq task type of reminders of one shard due in the
// same second, run together. asynq's ServeMux routes a type to the handler
// of its longest registered prefix, so a Worker registered for
// TypeReminder gets these too.
const TypeBatch = TypeReminder + ":batch"

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
	// Tries counts the attempts that ended with devices to try again
	// later (a provider's 5xx or Retry-After, the user's send lock busy).
	Tries int `json:"tries,omitempty"`
}

// ID names the reminder of one stage of one episode: the sent-devices set
// and the task ids derive from it.
func (r Reminder) ID() string {
	return r.User + "|" + r.Conversation + "|" + r.Episode + "|" + strconv.Itoa(r.Stage)
}

// TaskID is the asynq task id of the reminder alone: its id, plus the
// deferral count for a reminder that was put off and the try count for one
// tried again (the original task is still being processed when its
// follow-up is enqueued).
func (r Reminder) TaskID() string {
	id := "rem:" + r.ID()
	if r.Defers > 0 {
		id += "|d" + strconv.Itoa(r.Defers)
	}
	if r.Tries > 0 {
		id += "|t" + strconv.Itoa(r.Tries)
	}
	return id
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

// batchPayload is the payload of a TypeBatch task.
type batchPayload struct {
	Reminders []Reminder `json:"reminders"`
}

// maxBatch bounds the reminders of one task a worker accepts.
const maxBatch = 10_000

// decodeTask returns the reminders of a TypeReminder or TypeBatch task.
func decodeTask(t *asynq.Task) ([]Reminder, error) { return DecodeTask(t.Type(), t.Payload()) }

// DecodeTask returns the reminders of a task of type typ (TypeReminder or
// TypeBatch) from its payload, as tools that inspect the queue see them
// (asynq.TaskInfo's Type and Payload). An error wraps ErrBadPayload.
func DecodeTask(typ string, payload []byte) ([]Reminder, error) {
	if typ != TypeBatch {
		var r Reminder
		if err := json.Unmarshal(payload, &r); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPayload, err)
		}
		return []Reminder{r}, validReminder(r)
	}
	var b batchPayload
	if err := json.Unmarshal(payload, &b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	if len(b.Reminders) == 0 || len(b.Reminders) > maxBatch {
		return nil, fmt.Errorf("%w: %d reminders in a batch (want 1 to %d)", ErrBadPayload, len(b.Reminders), maxBatch)
	}
	for _, r := range b.Reminders {
		if err := validReminder(r); err != nil {
			return nil, err
		}
	}
	return b.Reminders, nil
}

func validReminder(r Reminder) error {
	if r.User == "" || r.Conversation == "" || r.Episode == "" || r.Stage < 1 || r.Due <= 0 || r.Shard < 0 || r.Defers < 0 || r.Tries < 0 {
		return fmt.Errorf("%w: missing or negative fields in reminder %+v", ErrBadPayload, r)
	}
	return nil
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
	// MaxRetry is how many times a reminder whose devices failed with a
	// transient error is tried again before it is counted as failed (reason
	// "gave_up"). Default 12.
	MaxRetry int
	// TaskRetries is how many times asynq retries a task that could not run
	// at all (Redis or PostgreSQL away), waiting up to 5 minutes between
	// tries, before it archives it (counted and logged as given up).
	// Default 300: a day of outage.
	TaskRetries int
	// BatchSize is the most reminders of one task. Default 500.
	BatchSize int
	// PushConcurrency is the most sends to providers in flight at once in
	// one Worker, whatever the number of tasks running: a slow provider
	// holds these, not every task slot. Default 64.
	PushConcurrency int
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
	c.IngestGroup = cmp.Or(c.IngestGroup, ingest.DefaultGroup)
	if len(c.Stages) == 0 {
		c.Stages = []time.Duration{5 * time.Minute, time.Hour, 24 * time.Hour}
	}
	c.DigestWindow = cmp.Or(c.DigestWindow, 30*time.Second)
	c.RateLimit = cmp.Or(c.RateLimit, 10)
	c.RateWindow = cmp.Or(c.RateWindow, time.Hour)
	c.Retention = cmp.Or(c.Retention, time.Hour)
	c.SentTTL = cmp.Or(c.SentTTL, 48*time.Hour)
	c.MaxRetry = cmp.Or(c.MaxRetry, 12)
	c.TaskRetries = cmp.Or(c.TaskRetries, 300)
	c.BatchSize = cmp.Or(c.BatchSize, 500)
	c.PushConcurrency = cmp.Or(c.PushConcurrency, 64)
	c.Logger = cmp.Or(c.Logger, slog.Default())
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
	case c.BatchSize < 1 || c.BatchSize > maxBatch:
		return c, fmt.Errorf("%w: BatchSize %d: want 1 to %d", ErrConfig, c.BatchSize, maxBatch)
	case c.PushConcurrency < 1:
		return c, fmt.Errorf("%w: PushConcurrency %d: want at least 1", ErrConfig, c.PushConcurrency)
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
