package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/apps"
	"github.com/nudgehq/nudge/registry"
)

// Directory is what the worker needs of the registry: the devices and
// preferences of many users at once (one query each for a whole batch).
type Directory interface {
	DevicesOf(ctx context.Context, users []string) (map[string][]registry.Device, error)
	PrefsOf(ctx context.Context, users []string) (map[string]registry.Prefs, error)
	RemoveToken(ctx context.Context, platform, token string) error
}

// Warmer is a Directory that keeps what it reads for a while
// (registry.Cache). A task that comes before its due time has its users'
// devices and preferences read while it waits (Worker.warm), and finds
// them in memory at the due time: the reads leave the time between the
// due time and the first push.
type Warmer interface {
	Warm(ctx context.Context, users []string) error
}

var (
	_ Directory = (*registry.Store)(nil)
	_ Directory = (*registry.Cache)(nil)
	_ Warmer    = (*registry.Cache)(nil) // the worker binary's Directory
)

// Reasons a reminder is dropped or put off, as counter reasons. A
// reminder cancelled by a read (reminders_cancelled) has none: its metric
// says why.
const (
	ReasonMuted        = "muted"         // the user muted the conversation
	ReasonMentionsOnly = "mentions_only" // mentions only, and not mentioned
	ReasonNoDevices    = "no_devices"    // the user has no push device
	ReasonDigested     = "digested"      // sent as part of another reminder's digest
	ReasonGaveUp       = "gave_up"       // failed: its devices still failed after MaxRetry tries
	ReasonOnline       = "online"        // put off: the user is online
	ReasonQuietHours   = "quiet_hours"   // put off: quiet hours in the user's time zone
	ReasonRateLimited  = "rate_limited"  // put off: the user got RateLimit reminders this window
	ReasonNotApplied   = "not_applied"   // put off: ingest has not applied the opening message yet
	ReasonEarly        = "early"         // put off: the task arrived more than 3 s before the due time
	ReasonLockBusy     = "lock_busy"     // put off: another run held the user's send lock for lockWait
	ReasonNoSender     = "no_sender"     // a push failed: the device's app has no provider for its platform
	ReasonUnknownApp   = "unknown_app"   // a push failed: the device's app has no credentials (not in the apps file)
	ReasonUnknownTopic = "unknown_topic" // a push failed: the device names a bundle id its app does not list
)

// Apps gives the worker each app's push senders and how its reminders are
// written: apps.Live (the apps file, reloaded when it changes), or
// apps.Single for single-app settings.
type Apps interface {
	Current() *apps.Set
}

// RetryError asks for a retry after After (a provider's Retry-After);
// RetryDelay reads it.
type RetryError struct {
	After time.Duration
	Err   error
}

func (e *RetryError) Error() string { return fmt.Sprintf("retry after %s: %v", e.After, e.Err) }
func (e *RetryError) Unwrap() error { return e.Err }

// RetryDelay is the asynq RetryDelayFunc for reminders, and the delay of a
// reminder's own next try: a provider's Retry-After when there is one,
// else exponential backoff from 2s capped at 5 minutes.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var re *RetryError
	if errors.As(err, &re) && re.After > 0 {
		return re.After
	}
	d := 2 * time.Second << min(n, 10)
	return min(d, 5*time.Minute)
}

// Worker runs reminder tasks, alone (TypeReminder) or in batches
// (TypeBatch). Register it with an asynq.ServeMux for TypeReminder: the
// mux routes TypeBatch to it too.
type Worker struct {
	cfg    Config
	rdb    redis.UniversalClient
	client *asynq.Client
	dir    Directory
	apps   Apps
	log    *slog.Logger
	met    *metrics
	// pushSlots bounds the sends in flight (Config.PushConcurrency).
	pushSlots chan struct{}
}

var _ asynq.Handler = (*Worker)(nil)

// NewWorker returns a Worker. a picks each device's sender and text by the
// device's app; a device whose app has no credentials fails with reason
// "unknown_app", one whose app has no provider for its platform with
// "no_sender". Nil a: no app has any.
func NewWorker(rdb redis.UniversalClient, client *asynq.Client, dir Directory, a Apps, cfg Config) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if a == nil {
		a = apps.Single(nil, nil)
	}
	return &Worker{cfg: cfg, rdb: rdb, client: client, dir: dir, apps: a, log: cfg.Logger.With("component", "worker"),
		met: newMetrics(cfg.Metrics), pushSlots: make(chan struct{}, cfg.PushConcurrency)}, nil
}

// ProcessTask runs the reminders of one task (run). A task that does not
// decode is not retried.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	rs, err := decodeTask(t)
	for _, r := range rs {
		if err == nil && r.Shard >= w.cfg.Keyspace.Shards {
			err = fmt.Errorf("%w: shard %d of %d", ErrBadPayload, r.Shard, w.cfg.Keyspace.Shards)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return w.run(ctx, rs)
}

// HandleError is the asynq ErrorHandler of reminder tasks: it counts a task
// that failed as a whole by cause, and logs it; a task that failed its last
// retry (asynq archives it) is counted and logged as an error, with its
// reminders, so that giving up is never silent.
func (w *Worker) HandleError(ctx context.Context, t *asynq.Task, err error) {
	cause := failureCause(err)
	w.met.taskFailures.WithLabelValues(cause).Inc()
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	id, _ := asynq.GetTaskID(ctx)
	rs, _ := decodeTask(t)
	if errors.Is(err, asynq.SkipRetry) || retried >= maxRetry {
		w.met.archived.Inc()
		w.log.Error("reminder task given up: archived, its reminders not sent", "task", id, "reminders", len(rs),
			"cause", cause, "retried", retried, "err", err)
		return
	}
	w.log.Warn("reminder task failed; asynq retries it", "task", id, "reminders", len(rs), "cause", cause,
		"retried", retried, "max_retry", maxRetry, "err", err)
}

// failureCause names what a task's error came from, for the failure count:
// "postgres" for the registry's errors (marked where the worker calls it),
// "redis" for a Redis reply, a connection's or the pool's, and asynq's
// (marked where it is called), "timeout" for the
// task's deadline, "other" for the rest (a push to try again, say). No
// message text decides it.
func failureCause(err error) string {
	var marked *storeError
	var pgReply *pgconn.PgError
	var pgConnect *pgconn.ConnectError
	var replyErr redis.Error
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &marked):
		return marked.store
	case errors.As(err, &pgReply), errors.As(err, &pgConnect): // PostgreSQL's, even unmarked
		return "postgres"
	case errors.As(err, &replyErr), errors.As(err, &netErr), errors.Is(err, redis.Nil), errors.Is(err, redis.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "redis"
	}
	return "other"
}

// storeError marks an error with the store it came from, where the
// error's own type may not say: the Directory (PostgreSQL behind it) and
// asynq (Redis behind it, its errors its own).
type storeError struct {
	store string // "postgres" or "redis"
	err   error
}

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// fromRegistry marks err as the Directory's.
func fromRegistry(err error) error {
	if err == nil {
		return nil
	}
	return &storeError{"postgres", err}
}

// fromQueue marks err as asynq's.
func fromQueue(err error) error {
	if err == nil {
		return nil
	}
	return &storeError{"redis", err}
}
