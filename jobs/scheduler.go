package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/keys"
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
// Redis of the counters, which holds the queue too (one Redis, or one
// Redis Cluster, for both); prefs may be nil (everyone gets the default).
func NewScheduler(client *asynq.Client, insp *asynq.Inspector, rdb redis.UniversalClient, prefs PrefsSource, cfg Config) (*Scheduler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg, client: client, insp: insp, rdb: rdb, prefs: prefs,
		log: cfg.Logger.With("component", "scheduler"), met: newMetrics(cfg.Metrics), workers: 16}, nil
}

// EpisodesOpened marks the first reminder of each episode queued and
// enqueues it, those of a shard due in the same second as one task, and
// returns one reminders_scheduled count per episode, for ingest's relay to
// record once. A task that exists already (the episodes handed over again)
// is left as it is.
func (s *Scheduler) EpisodesOpened(ctx context.Context, eps []ingest.Episode) (ingest.Counts, error) {
	if len(eps) == 0 {
		return nil, nil
	}
	delays := s.delays(ctx, eps)
	rs := make([]Reminder, len(eps))
	for i, ep := range eps {
		delay := s.cfg.Stages[0]
		if d, ok := delays[ep.User]; ok && d > 0 {
			delay = d
		}
		// The delay counts from when ingest applied the opening message (a
		// producer's clock may be off), not from when the relay got to it.
		due := ep.AppliedAt.Add(delay)
		if ep.AppliedAt.IsZero() {
			due = s.cfg.Now().Add(delay)
		}
		rs[i] = Reminder{Shard: ep.Shard, App: ep.App, User: ep.User, Conversation: ep.Conversation,
			Episode: ep.ID, Stage: 1, Due: due.UnixMilli()}
	}
	if err := markQueued(ctx, s.rdb, s.cfg, rs); err != nil {
		return nil, err
	}
	if _, err := enqueueAll(ctx, s.client, s.cfg, rs); err != nil {
		return nil, err
	}
	counts := ingest.Counts{}
	for _, ep := range eps {
		counts[counters.Dims{Metric: counters.RemindersQueued, App: appOr(ep.App)}]++
	}
	return counts, nil
}

// markQueued marks reminders queued (a read may cancel them) until an hour
// past their due time; a record that has a lifetime already keeps it.
func markQueued(ctx context.Context, rdb redis.UniversalClient, cfg Config, rs []Reminder) error {
	pipe := rdb.Pipeline()
	for _, r := range rs {
		key := cfg.Keyspace.Sent(r.Shard, r.ID())
		pipe.SAdd(ctx, key, queuedMember)
		pipe.ExpireNX(ctx, key, time.Until(r.DueTime())+time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("mark reminders queued: %w", err)
	}
	return nil
}

// delays returns the users' reminder delays. When PostgreSQL cannot answer
// it goes on with the last known delays and the default for the rest:
// reminders keep being scheduled through an outage, a few with the default
// delay.
func (s *Scheduler) delays(ctx context.Context, eps []ingest.Episode) map[string]time.Duration {
	if s.prefs == nil {
		return nil
	}
	users := distinctUsers(eps, func(ep ingest.Episode) string { return ep.User })
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

// enqueueAll enqueues reminders, those of a shard due in the same second
// as one task of up to BatchSize (TypeBatch), a reminder alone as a
// TypeReminder task under its own TaskID. A batch's task id derives from
// its reminders' task ids, so that enqueueing the same reminders again
// makes no second task. It returns how many reminders went into new tasks.
func enqueueAll(ctx context.Context, client *asynq.Client, cfg Config, rs []Reminder) (int, error) {
	type slot struct {
		shard int
		at    int64
	}
	groups := map[slot][]Reminder{}
	var order []slot
	for _, r := range rs {
		k := slot{r.Shard, dueSecond(r)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var made atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, k := range order {
		group := groups[k]
		for len(group) > 0 {
			part := group[:min(len(group), cfg.BatchSize)]
			group = group[len(part):]
			g.Go(func() error {
				ok, err := enqueueTask(gctx, client, cfg, part)
				if ok {
					made.Add(int64(len(part)))
				}
				return err
			})
		}
	}
	err := g.Wait()
	return int(made.Load()), err
}

// dueSecond is the whole second a reminder falls due in: asynq keeps due
// times in whole seconds, rounded down, and moves a task to the queue
// within DelayedTaskCheckInterval after that second starts, up to a second
// before the reminder is due. The worker waits for the due time: the task
// holds a slot meanwhile (hence the worker's many slots, -concurrency), and
// starts on time rather than up to a second late. Reminders are grouped
// into tasks by this second.
func dueSecond(r Reminder) int64 { return r.DueTime().Unix() }

// enqueue adds r alone to the queue; it reports whether a new task was
// made.
func enqueue(ctx context.Context, client *asynq.Client, cfg Config, r Reminder) (bool, error) {
	return enqueueTask(ctx, client, cfg, []Reminder{r})
}

// enqueueTask adds one task of reminders of one shard due in the same
// second; it reports whether a new task was made (false: a task of that id
// exists).
func enqueueTask(ctx context.Context, client *asynq.Client, cfg Config, rs []Reminder) (bool, error) {
	task, id := rs[0].Task(), rs[0].TaskID()
	timeout := 2 * time.Minute
	at := rs[0].DueTime()
	if len(rs) > 1 {
		at = slices.MinFunc(rs, func(a, b Reminder) int { return a.DueTime().Compare(b.DueTime()) }).DueTime()
		ids := make([]string, len(rs))
		for i, r := range rs {
			ids[i] = r.TaskID()
		}
		h := sha256.Sum256([]byte(strings.Join(ids, "\n")))
		id = "remb:" + hex.EncodeToString(h[:16])
		b, _ := json.Marshal(batchPayload{Reminders: rs})
		task = asynq.NewTask(TypeBatch, b)
		timeout = 5 * time.Minute
	}
	_, err := client.EnqueueContext(ctx, task,
		asynq.TaskID(id),
		asynq.Queue(cfg.Queue),
		asynq.ProcessAt(at),
		asynq.MaxRetry(cfg.TaskRetries),
		asynq.Retention(cfg.Retention),
		asynq.Timeout(timeout),
	)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return false, nil
	default:
		return false, fromQueue(fmt.Errorf("enqueue %s: %w", id, err))
	}
}

// EpisodesClosed cancels the queued reminder of each ended episode: one
// that is not finished and that no worker has started pushing is marked
// finished as cancelled and counted, in one step per shard, and its task,
// if it has one of its own, deleted. A reminder that runs anyway (one of a
// batch, or one that started in between) finds the mark, or the episode
// read, and does nothing more.
func (s *Scheduler) EpisodesClosed(ctx context.Context, eps []ingest.Episode) error {
	var rs []Reminder
	for _, ep := range eps {
		for stage := 1; stage <= len(s.cfg.Stages); stage++ {
			rs = append(rs, Reminder{Shard: ep.Shard, App: ep.App, User: ep.User, Conversation: ep.Conversation, Episode: ep.ID, Stage: stage})
		}
	}
	cancelled, err := cancelQueued(ctx, s.rdb, s.cfg, rs)
	if err != nil {
		return err
	}
	s.met.reminder(counters.RemindersCancel, "", len(cancelled))
	alone, err := s.queuedAlone(ctx, cancelled)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.workers)
	for _, r := range alone {
		g.Go(func() error {
			err := s.insp.DeleteTask(s.cfg.Queue, r.TaskID())
			switch {
			case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound), activeTask(err):
				_ = gctx
				return nil // deleted; or one of a batch, started, or deleted in between: it finds the mark
			default:
				return fromQueue(fmt.Errorf("delete the cancelled reminder %s: %w", r.TaskID(), err))
			}
		})
	}
	return g.Wait()
}

// queuedAlone returns the reminders of rs that have a task of their own,
// from one pipeline of EXISTS on asynq's task hashes. Most first reminders
// share a task with the others of their shard and due second
// (enqueueAll), which a cancel leaves to run and skip them; asking asynq
// to delete each (two round trips a reminder, most finding nothing) cost
// Redis more than the cancels themselves. A task made after the EXISTS
// is not deleted, and finds its reminder's mark when it runs. The queue
// lives in the Redis of the counters (rdb), as Nudge runs it.
func (s *Scheduler) queuedAlone(ctx context.Context, rs []Reminder) ([]Reminder, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	found := make([]*redis.IntCmd, len(rs))
	for i, r := range rs {
		found[i] = pipe.Exists(ctx, keys.AsynqTask(s.cfg.Queue, r.TaskID()))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fromQueue(fmt.Errorf("find the tasks of cancelled reminders: %w", err))
	}
	var out []Reminder
	for i, r := range rs {
		if found[i].Val() == 1 {
			out = append(out, r)
		}
	}
	return out, nil
}

// cancelScript marks queued reminders of one shard finished as cancelled,
// and counts each, unless it is finished already or claimed by a worker
// pushing it. The record keeps the lifetime it was queued with.
//
// The stages of an episode come in order, and a stage is queued only by
// the step that finishes the one before it (finishScript). So once a
// stage is found queued and not finished (the usual read, before the
// first reminder), the later stages of its episode are not asked about:
// none of them can be queued. A stage whose record is gone (expired) does
// not tell, and the next is asked.
//
// KEYS[1] counters hash, KEYS[2] counter index, KEYS[3..] sent sets, the
// stages of an episode one after the other. ARGV[1] minute, ARGV[2]
// counters TTL (s), ARGV[3] the outcome member, then for each sent set its
// counter field and how many sent sets after it are of the same episode.
// Returns the positions (from 1) of the sent sets it cancelled.
var cancelScript = datastore.NewScript("scheduler", `#!lua`+countedHead+`
local out = {}
local i = 3
while i <= #KEYS do
  local k, a = KEYS[i], 4 + 2 * (i - 3)
  local has = redis.call('SMISMEMBER', k, '!q', '!c', '!done')
  if has[1] == 1 and has[3] == 0 then
    if has[2] == 0 then
      redis.call('SADD', k, '!done', ARGV[3])
      count(ARGV[a], 1)
      out[#out + 1] = i - 2
    end
    i = i + tonumber(ARGV[a + 1])
  end
  i = i + 1
end
`+countedTail+`return out`)

// cancelQueued cancels the reminders of rs that are queued, not finished
// and not claimed (cancelScript), and returns them. rs holds the stages of
// each episode one after the other, from the first (EpisodesClosed).
func cancelQueued(ctx context.Context, rdb redis.UniversalClient, cfg Config, rs []Reminder) ([]Reminder, error) {
	now := cfg.Now()
	minute := keys.Minute(now)
	ks := cfg.Keyspace
	member := Outcome{Metric: counters.RemindersCancel, At: now}.member()
	var out []Reminder
	for shard, group := range byShard(rs, func(r Reminder) int { return r.Shard }) {
		keys, args := counterArgs(ks, shard, minute)
		args = append(args, member)
		for i, r := range group {
			later := 0 // sent sets after this one of the same episode
			for _, n := range group[i+1:] {
				if n.Episode != r.Episode || n.User != r.User || n.Conversation != r.Conversation || n.Stage <= r.Stage {
					break
				}
				later++
			}
			keys = append(keys, ks.Sent(shard, r.ID()))
			args = append(args, counters.Field(counters.Dims{Metric: counters.RemindersCancel, App: appOr(r.App)}), later)
		}
		pos, err := cancelScript.Run(ctx, rdb, keys, args...).Int64Slice()
		if err != nil {
			return out, fmt.Errorf("cancel reminders: %w", err)
		}
		for _, p := range pos {
			if p >= 1 && int(p) <= len(group) {
				out = append(out, group[p-1])
			}
		}
	}
	return out, nil
}

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
