package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/ingest"
)

// PrefsSource gives users' reminder delay preferences.
type PrefsSource interface {
	// ReminderDelays returns the delay of each user that has one set;
	// users without one are absent (the default). On an error it may
	// still return what it knows (the last known delays).
	ReminderDelays(ctx context.Context, users []string) (map[string]time.Duration, error)
}

// Scheduler enqueues first reminders when episodes open and removes
// pending ones when episodes end. It implements ingest.Hooks: ingest's
// relay calls it after the episodes were applied, outside the shard loop.
type Scheduler struct {
	cfg     Config
	client  *asynq.Client
	insp    *asynq.Inspector
	rdb     redis.UniversalClient
	prefs   PrefsSource
	log     *slog.Logger
	met     *metrics
	workers int
	// prefsDown is set while the reminder delays cannot be read: the log
	// says so once per outage.
	prefsDown atomic.Bool
}

var _ ingest.Hooks = (*Scheduler)(nil)

// NewScheduler returns a Scheduler enqueuing through client. rdb is the
// Redis of the counters; prefs may be nil (everyone gets the default).
func NewScheduler(client *asynq.Client, insp *asynq.Inspector, rdb redis.UniversalClient, prefs PrefsSource, cfg Config) (*Scheduler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg, client: client, insp: insp, rdb: rdb, prefs: prefs,
		log: cfg.Logger.With("component", "scheduler"), met: newMetrics(cfg.Metrics), workers: 16}, nil
}

// EpisodesOpened enqueues the first reminder of each episode, concurrently,
// and returns one reminders_scheduled count per episode, for ingest's relay
// to record once. A task that exists already (the episodes handed over
// again) is left as it is.
func (s *Scheduler) EpisodesOpened(ctx context.Context, eps []ingest.Episode) (ingest.Counts, error) {
	if len(eps) == 0 {
		return nil, nil
	}
	delays := s.delays(ctx, eps)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.workers)
	for _, ep := range eps {
		g.Go(func() error {
			delay := s.cfg.Stages[0]
			if d, ok := delays[ep.User]; ok && d > 0 {
				delay = d
			}
			// The delay counts from when ingest applied the opening
			// message (a producer's clock may be off), not from when the
			// relay got to it.
			due := ep.AppliedAt.Add(delay)
			if ep.AppliedAt.IsZero() {
				due = s.cfg.Now().Add(delay)
			}
			r := Reminder{Shard: ep.Shard, App: ep.App, User: ep.User, Conversation: ep.Conversation,
				Episode: ep.ID, Stage: 1, Due: due.UnixMilli()}
			_, err := s.enqueue(gctx, r)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	counts := ingest.Counts{}
	for _, ep := range eps {
		counts[counters.Dims{Metric: counters.RemindersQueued, App: appOr(ep.App)}]++
	}
	return counts, nil
}

// delays returns the users' reminder delays. When PostgreSQL cannot answer
// it goes on with the last known delays and the default for the rest:
// reminders keep being scheduled through an outage, a few with the default
// delay.
func (s *Scheduler) delays(ctx context.Context, eps []ingest.Episode) map[string]time.Duration {
	if s.prefs == nil {
		return nil
	}
	users := make([]string, 0, len(eps))
	seen := make(map[string]bool, len(eps))
	for _, ep := range eps {
		if !seen[ep.User] {
			seen[ep.User] = true
			users = append(users, ep.User)
		}
	}
	d, err := s.prefs.ReminderDelays(ctx, users)
	if err != nil {
		s.met.prefsFallback.Add(float64(len(users)))
		if !s.prefsDown.Swap(true) {
			s.log.Warn("reminder delays cannot be read; scheduling with the last known delays or the default until they can", "err", err)
		}
		return d
	}
	if s.prefsDown.Swap(false) {
		s.log.Info("reminder delays can be read again")
	}
	return d
}

// Counted is told of the counts EpisodesOpened returned once ingest
// recorded them.
func (s *Scheduler) Counted(c ingest.Counts) {
	for d, n := range c {
		s.met.reminder(d.Metric, d.Reason, int(n))
	}
}

// enqueue adds a reminder task; it reports whether a new task was made.
func (s *Scheduler) enqueue(ctx context.Context, r Reminder) (bool, error) {
	return enqueue(ctx, s.client, s.cfg, r)
}

// enqueue adds r to the queue. asynq keeps due times in whole seconds,
// rounded down, so a task would reach a worker up to a second early, and
// the worker would have to hold a slot while it waits (at a few hundred
// reminders a second that stalls the queue). The due time is rounded up
// instead: the task is never early, and is moved to the queue within
// DelayedTaskCheckInterval after the next whole second.
func enqueue(ctx context.Context, client *asynq.Client, cfg Config, r Reminder) (bool, error) {
	_, err := client.EnqueueContext(ctx, r.Task(),
		asynq.TaskID(r.TaskID()),
		asynq.Queue(cfg.Queue),
		asynq.ProcessAt(r.DueTime().Add(time.Second-time.Nanosecond).Truncate(time.Second)),
		asynq.MaxRetry(cfg.MaxRetry),
		asynq.Retention(cfg.Retention),
		asynq.Timeout(2*time.Minute),
	)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return false, nil
	default:
		return false, fmt.Errorf("enqueue %s: %w", r.TaskID(), err)
	}
}

// EpisodesClosed deletes the pending reminder of each ended episode,
// counting each one it cancels once. A reminder that runs anyway (it
// started in between) finds the episode read and cancels itself.
func (s *Scheduler) EpisodesClosed(ctx context.Context, eps []ingest.Episode) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.workers)
	for _, ep := range eps {
		g.Go(func() error {
			if err := s.cancel(gctx, ep); err != nil {
				return fmt.Errorf("cancel reminder of %s in %s: %w", ep.User, ep.Conversation, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// cancel deletes the episode's reminder that has not run yet, if any. At
// most one stage is waiting at a time (the worker schedules the next stage
// when it finishes one), but stages that ran stay in the queue as completed
// tasks for Retention, their ids guarding against scheduling them again: so
// the states of all stages are read first, in one round trip, from asynq's
// task hashes (asynq:{queue}:t:<id>, field "state") with their due times,
// and only a waiting one is cancelled.
//
// The reminder is first marked finished as cancelled, and counted, in one
// step (finishReminder), then its task is deleted: an error or a crash in
// between leaves a marked task that the next attempt deletes, or that runs,
// finds the mark and does nothing. The mark lives until an hour past the
// task's due time, not the 48 hours of a sent reminder's record: read
// episodes are most of them. A task that became active since its state was
// read cannot be deleted and cannot have been marked wrongly: it started
// after the read was applied, so it finds the episode read.
func (s *Scheduler) cancel(ctx context.Context, ep ingest.Episode) error {
	n := len(s.cfg.Stages)
	ids := make([]string, n)
	states := make([]*redis.StringCmd, n)
	dues := make([]*redis.FloatCmd, n)
	pipe := s.rdb.Pipeline()
	for i := range ids {
		ids[i] = Reminder{User: ep.User, Conversation: ep.Conversation, Episode: ep.ID, Stage: i + 1}.TaskID()
		states[i] = pipe.HGet(ctx, asynqKey(s.cfg.Queue, "t:"+ids[i]), "state")
		dues[i] = pipe.ZScore(ctx, asynqKey(s.cfg.Queue, "scheduled"), ids[i])
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	for i, st := range states {
		switch st.Val() {
		case "scheduled", "pending", "retry":
		default: // none, active, completed or archived
			continue
		}
		ttl := time.Hour
		if due, err := dues[i].Result(); err == nil {
			ttl += time.Until(time.Unix(int64(due), 0))
		}
		r := Reminder{Shard: ep.Shard, App: ep.App, User: ep.User, Conversation: ep.Conversation, Episode: ep.ID, Stage: i + 1}
		finished, err := finishReminder(ctx, s.rdb, s.cfg, r, counters.RemindersCancel, "", nil, ttl)
		if err != nil {
			return err
		}
		if finished {
			s.met.reminder(counters.RemindersCancel, "", 1)
		}
		err = s.insp.DeleteTask(s.cfg.Queue, ids[i])
		switch {
		case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound), activeTask(err):
			return nil // deleted, or it started (and finds the mark) or was deleted in between
		default:
			return err
		}
	}
	return nil
}

// asynqKey is the key of one of asynq's structures of queue: "t:<task id>"
// (a task's hash), "scheduled" (a sorted set of task ids by due time). It
// is asynq's key layout (internal/base), which asynq does not export.
func asynqKey(queue, what string) string { return "asynq:{" + queue + "}:" + what }

// activeTask reports whether err is asynq refusing to delete a task that
// is running (it has no exported error for it: FAILED_PRECONDITION).
func activeTask(err error) bool {
	return err != nil && strings.Contains(err.Error(), "FAILED_PRECONDITION")
}

func appOr(app string) string {
	if app == "" {
		return "default"
	}
	return app
}
