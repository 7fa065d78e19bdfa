package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/ingest"
)

// PrefsSource gives a user's reminder delay preference (0: the default).
type PrefsSource interface {
	ReminderDelay(ctx context.Context, user string) (time.Duration, error)
}

// Scheduler enqueues first reminders when episodes open and removes
// pending ones when episodes end. It implements ingest.Hooks.
type Scheduler struct {
	cfg     Config
	client  *asynq.Client
	insp    *asynq.Inspector
	rdb     redis.UniversalClient
	prefs   PrefsSource
	log     *slog.Logger
	met     *metrics
	workers int
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

// EpisodesOpened enqueues the first reminder of each episode, concurrently.
// A task that exists already (a redelivered batch) counts as scheduled.
func (s *Scheduler) EpisodesOpened(ctx context.Context, eps []ingest.Episode) error {
	now := s.cfg.Now()
	scheduled := make([]bool, len(eps))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.workers)
	for i, ep := range eps {
		g.Go(func() error {
			delay := s.cfg.Stages[0]
			if s.prefs != nil {
				d, err := s.prefs.ReminderDelay(gctx, ep.User)
				if err != nil {
					return fmt.Errorf("delay of %s: %w", ep.User, err)
				}
				if d > 0 {
					delay = d
				}
			}
			r := Reminder{Shard: ep.Shard, App: ep.App, User: ep.User, Conversation: ep.Conversation,
				Episode: ep.ID, Stage: 1, Due: now.Add(delay).UnixMilli()}
			ok, err := s.enqueue(gctx, r)
			scheduled[i] = ok
			return err
		})
	}
	err := g.Wait()
	s.count(ctx, eps, scheduled, counters.RemindersQueued)
	return err
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

// EpisodesClosed deletes the pending reminder of each ended episode. It
// is best effort: a reminder that fires anyway finds the episode read.
func (s *Scheduler) EpisodesClosed(ctx context.Context, eps []ingest.Episode) {
	cancelled := make([]bool, len(eps))
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(s.workers)
	for i, ep := range eps {
		g.Go(func() error {
			ok, err := s.cancel(ctx, ep)
			if err != nil {
				s.log.Warn("cancel reminder", "user", ep.User, "conv", ep.Conversation, "episode", ep.ID, "err", err)
			}
			cancelled[i] = ok
			return nil
		})
	}
	_ = g.Wait()
	s.count(ctx, eps, cancelled, counters.RemindersCancel)
}

// cancel deletes the episode's reminder that has not run yet, if any, and
// reports whether it did. At most one stage is waiting at a time (the
// worker schedules the next stage when it finishes one), but stages that
// ran stay in the queue as completed tasks for Retention, their ids
// guarding against scheduling them again: so the states of all stages are
// read first, in one round trip, from asynq's task hashes
// (asynq:{queue}:t:<id>, field "state"), and only a waiting one is
// deleted.
func (s *Scheduler) cancel(ctx context.Context, ep ingest.Episode) (bool, error) {
	ids := make([]string, len(s.cfg.Stages))
	states := make([]*redis.StringCmd, len(ids))
	pipe := s.rdb.Pipeline()
	for i := range ids {
		ids[i] = Reminder{User: ep.User, Conversation: ep.Conversation, Episode: ep.ID, Stage: i + 1}.TaskID()
		states[i] = pipe.HGet(ctx, "asynq:{"+s.cfg.Queue+"}:t:"+ids[i], "state")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	for i, st := range states {
		switch st.Val() {
		case "scheduled", "pending", "retry":
		default: // none, active, completed or archived
			continue
		}
		err := s.insp.DeleteTask(s.cfg.Queue, ids[i])
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			return false, nil // it started, or was deleted, in between
		default:
			return false, err
		}
	}
	return false, nil
}

func (s *Scheduler) count(ctx context.Context, eps []ingest.Episode, which []bool, metric string) {
	byShard := map[int]map[counters.Dims]int64{}
	for i, ep := range eps {
		if !which[i] {
			continue
		}
		s.met.reminder(metric, "", 1)
		if byShard[ep.Shard] == nil {
			byShard[ep.Shard] = map[counters.Dims]int64{}
		}
		byShard[ep.Shard][counters.Dims{Metric: metric, App: appOr(ep.App)}]++
	}
	for shard, incr := range byShard {
		if err := counters.Add(ctx, s.rdb, s.cfg.Keyspace, shard, s.cfg.Now(), incr); err != nil {
			s.log.Warn("count", "metric", metric, "err", err)
		}
	}
}

func appOr(app string) string {
	if app == "" {
		return "default"
	}
	return app
}
