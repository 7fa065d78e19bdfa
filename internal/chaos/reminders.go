package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/internal/streamid"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push/sandbox"
)

// The reminder checks of a run, and what they rely on. One file, over 400
// lines on purpose: the checks and the timing they share (when an
// episode's reminder fell due, when ingest applied a read) read together.
//
// Times come from three clocks of one machine: Redis's (the time of a
// stream entry id, when an event was published), the processes' (a
// reminder's due time, its recorded outcome) and this process's (when an
// entry was seen applied). The run takes them to be one clock.
//
// An episode's first reminder is due at most its user's delay after the
// opening message was applied (the scheduler enqueues it before the batch
// is applied), and at least that delay after the message was published.
// When an entry was applied is not assumed from a bound on ingest's lag (a
// kill makes it wait the 3 s claim idle time and more): it is measured,
// by sampling each shard's consumer group (appliedLog).

// ingestGroup is cmd/ingest's default consumer group, which the run uses.
const ingestGroup = "nudge-ingest"

// stages is the reminder ladder of the run (NUDGE_STAGES).
var stages = []time.Duration{2 * time.Second, 4 * time.Second}

func stagesSetting() string {
	s := make([]string, len(stages))
	for i, d := range stages {
		s[i] = d.String()
	}
	return strings.Join(s, ",")
}

// workerSlack is how long after its due time the worker may take to start
// a reminder: asynq keeps due times in whole seconds and forwards them
// every 200 ms, an idle processor polls every second, a SIGKILLed worker
// is restarted, and the 20 slots may be busy with provider retries (in the
// runs measured, tasks completed up to 4 s after their due time, retries
// included). A read published later than this after the due time finds
// the reminder taken (finished, put off or in flight), so the reminder
// must have left a trace; a read that comes earlier may delete the task
// before it runs, leaving none, which is right.
const workerSlack = 10 * time.Second

// appliedLog is when each shard's entries were seen applied: every 100 ms
// it records, per shard, the id below which every entry has been applied
// and acknowledged (the lowest pending entry, else the one after the last
// delivered). An entry was applied by the first sample that passed it, at
// the latest.
type appliedLog struct {
	mu      sync.Mutex
	samples [][]appliedSample // by shard, in time order
}

type appliedSample struct {
	at    time.Time
	below streamid.ID
}

// watchApplied samples the shards until stop is called; stop takes a last
// sample, so that every entry applied by then is seen applied.
func watchApplied(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) (l *appliedLog, stop func()) {
	l = &appliedLog{samples: make([][]appliedSample, ks.Shards)}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			l.sample(wctx, rdb, ks)
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return l, func() {
		once.Do(func() {
			cancel()
			<-done
			l.sample(ctx, rdb, ks)
		})
	}
}

func (l *appliedLog) sample(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) {
	pipe := rdb.TxPipeline() // one snapshot of all shards
	groups := make([]*redis.XInfoGroupsCmd, ks.Shards)
	pending := make([]*redis.XPendingCmd, ks.Shards)
	for s := range ks.Shards {
		groups[s] = pipe.XInfoGroups(ctx, ks.Stream(s))
		pending[s] = pipe.XPending(ctx, ks.Stream(s), ingestGroup)
	}
	_, _ = pipe.Exec(ctx) // a shard without its group yet fails alone
	at := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range ks.Shards {
		var last string
		for _, g := range groups[s].Val() {
			if g.Name == ingestGroup {
				last = g.LastDeliveredID
			}
		}
		below, ok := streamid.Parse(last)
		if pending[s].Err() != nil || !ok {
			continue
		}
		below = below.Next()
		if p := pending[s].Val(); p.Count > 0 {
			if below, ok = streamid.Parse(p.Lower); !ok {
				continue
			}
		}
		l.samples[s] = append(l.samples[s], appliedSample{at: at, below: below})
	}
}

// appliedBy returns when an entry of a shard was seen applied; false if no
// sample saw it applied.
func (l *appliedLog) appliedBy(shard int, entry string) (time.Time, bool) {
	id, ok := streamid.Parse(entry)
	if !ok {
		return time.Time{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ss := l.samples[shard]
	i := sort.Search(len(ss), func(i int) bool { return id.Less(ss[i].below) })
	if i == len(ss) {
		return time.Time{}, false
	}
	return ss[i].at, true
}

// orphans are the reminder tasks that were active when the worker was
// SIGKILLed: asynq hands them to a worker again once their lease has
// expired (30 s) and its recoverer runs (every minute).
type orphans map[string]bool

// add notes the tasks active now, while no worker runs.
func (o orphans) add(insp *asynq.Inspector, queue string) error {
	active, err := listAll(insp.ListActiveTasks, queue)
	for _, t := range active {
		o[t.ID] = true
	}
	return err
}

// remindersSettled reports whether every first reminder that is due has
// been taken by the worker: none scheduled or waiting for a retry with its
// due time passed, none pending, none active but an orphan. (Later stages
// are not waited for: check 1 is about first reminders, and check 2 takes
// the pushes there are.) The states are read in the order tasks move
// through them, so that none is missed on its way.
func remindersSettled(insp *asynq.Inspector, queue string, orphaned orphans) (bool, error) {
	now := time.Now()
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){insp.ListScheduledTasks, insp.ListRetryTasks} {
		tasks, err := list(queue, asynq.PageSize(1000)) // the soonest first
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		for _, t := range tasks {
			if t.NextProcessAt.After(now) {
				break
			}
			if firstStage(t) {
				return false, nil
			}
		}
	}
	pending, err := listAll(insp.ListPendingTasks, queue)
	if err != nil {
		return false, err
	}
	active, err := listAll(insp.ListActiveTasks, queue)
	if err != nil {
		return false, err
	}
	for _, t := range pending {
		if firstStage(t) {
			return false, nil
		}
	}
	for _, t := range active {
		if firstStage(t) && !t.IsOrphaned && !orphaned[t.ID] {
			return false, nil
		}
	}
	return true, nil
}

// firstStage reports whether a task is a first reminder (or one that does
// not decode, to be safe).
func firstStage(t *asynq.TaskInfo) bool {
	rs, err := jobs.DecodeTask(t.Type, t.Payload)
	if err != nil {
		return true
	}
	for _, r := range rs {
		if r.Stage <= 1 {
			return true
		}
	}
	return false
}

// queuedReminders returns the reminders left in the queue once the worker
// stopped, by reminder id (jobs.Reminder.ID), with their state: "put off"
// (scheduled again by the worker: online, quiet hours, rate limit),
// "scheduled" (not due yet), "retry", "orphaned" (active in a SIGKILLed
// worker's hands) or "pending" (handed back at shutdown).
func queuedReminders(insp *asynq.Inspector, queue string) (map[string]string, error) {
	out := map[string]string{}
	for state, list := range map[string]func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		"scheduled": insp.ListScheduledTasks, "retry": insp.ListRetryTasks, "orphaned": insp.ListActiveTasks,
		"pending": insp.ListPendingTasks,
	} {
		tasks, err := listAll(list, queue)
		if err != nil {
			return nil, err
		}
		for _, t := range tasks {
			rs, err := jobs.DecodeTask(t.Type, t.Payload)
			if err != nil {
				return nil, fmt.Errorf("task %s: %w", t.ID, err)
			}
			for _, r := range rs {
				if state == "scheduled" && (r.Defers > 0 || r.Tries > 0) {
					out[r.ID()] = "put off"
				} else {
					out[r.ID()] = state
				}
			}
		}
	}
	return out, nil
}

func listAll(list func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error), queue string) ([]*asynq.TaskInfo, error) {
	var all []*asynq.TaskInfo
	for page := 1; ; page++ {
		tasks, err := list(queue, asynq.PageSize(1000), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		all = append(all, tasks...)
		if len(tasks) < 1000 {
			return all, nil
		}
	}
}

// reminderFacts is what the reminder checks compare.
type reminderFacts struct {
	episodes   []oracle.Episode
	delays     map[string]time.Duration // users' own first reminder delays
	users      map[string]string        // device token -> user
	deliveries []sandbox.Delivery
	applied    *appliedLog
	queued     map[string]string // see queuedReminders
	settled    time.Time         // every reminder due before it had been taken
}

// firstDelays returns the bounds of the first reminder's delay of a user:
// the scheduler takes the user's own delay if the registry has it already,
// else the first stage.
func (f *reminderFacts) firstDelays(user string) (lo, hi time.Duration) {
	lo, hi = stages[0], stages[0]
	if d := f.delays[user]; d > 0 {
		lo, hi = min(lo, d), max(hi, d)
	}
	return lo, hi
}

// checkReminders checks the two promises of reminders (see the package
// doc) and fills the report's counts.
//
// 1. Every episode still unread when its first reminder was due was pushed
// or finished for a recorded reason. An episode counts as due when its
// first reminder was due (at the latest: the opening message's apply time
// plus the user's delay) before the reminders settled, and it was not read
// until workerSlack after that. Its stage-1 reminder must then have a
// delivery, or a recorded outcome (sent; failed; suppressed with a reason;
// cancelled, but only at or after the read that closed the episode was
// published), or still be queued for later (put off, retrying, or
// orphaned by a kill).
//
// 2. No push for an episode read before its due time. A push of stage s is
// due at the earliest at the opening message's publication plus the
// user's first delay plus the later stages' delays up to s (the run turns
// digests off: a digest takes other reminders along before they are due);
// the worker re-checks the episode when it runs, never before that. So the read that
// closed a pushed episode must not have been applied before then (its
// apply time is measured, an upper bound: no slack is needed).
func checkReminders(ctx context.Context, rep *Report, rdb *redis.Client, ks keys.Keyspace, f *reminderFacts, log *slog.Logger) error {
	type epKey struct{ user, conv, id string }
	byKey := make(map[epKey]oracle.Episode, len(f.episodes))
	for _, ep := range f.episodes {
		byKey[epKey{ep.User, ep.Conversation, ep.ID}] = ep
	}
	pushed := map[string]bool{} // reminder ids with a delivery
	early := map[string]bool{}  // ... for an episode read before it was due
	failures := 0
	failf := func(format string, args ...any) {
		if failures++; failures <= 5 {
			rep.fail(format, args...)
		}
	}

	// 2: no push for an episode read before its due time.
	margin, margins := time.Duration(0), 0 // the closest a read came to a push's earliest due time
	for _, d := range f.deliveries {
		user, conv, id := f.users[d.Token], d.Data["conversation_id"], d.Data["episode"]
		stage, _ := strconv.Atoi(d.Data["stage"])
		r := jobs.Reminder{User: user, Conversation: conv, Episode: id, Stage: stage}
		first := !pushed[r.ID()]
		pushed[r.ID()] = true
		ep, ok := byKey[epKey{user, conv, id}]
		if !ok || stage < 1 || stage > len(stages) {
			if first {
				failf("pushed reminder %s, of no episode the traffic opened", r.ID())
			}
			continue
		}
		if ep.CloseID == "" {
			continue
		}
		lo, _ := f.firstDelays(user)
		due := ep.Opened.Add(lo)
		for _, s := range stages[1:stage] {
			due = due.Add(s)
		}
		read, ok := f.applied.appliedBy(ks.Shard(conv), ep.CloseID)
		if !ok {
			return fmt.Errorf("entry %s was never seen applied", ep.CloseID)
		}
		if margins++; margins == 1 || read.Sub(due) < margin {
			margin = read.Sub(due)
		}
		if read.Before(due) {
			rep.ReadBeforeDue++
			if !early[r.ID()] {
				early[r.ID()] = true
				failf("pushed reminder %s at %s, but the episode was read by %s, before its earliest due time %s",
					r.ID(), d.Time.Format(timeFmt), read.Format(timeFmt), due.Format(timeFmt))
			}
		}
	}

	// 1: every episode still unread at its due time pushed or finished for
	// a reason. Its stage-1 sent set holds the outcome.
	var due []oracle.Episode
	for _, ep := range f.episodes {
		opened, ok := f.applied.appliedBy(ks.Shard(ep.Conversation), ep.ID)
		if !ok {
			return fmt.Errorf("entry %s was never seen applied", ep.ID)
		}
		// The scheduler's due time is at most the apply time plus the
		// delay; asynq gets it rounded up to a whole second.
		_, hi := f.firstDelays(ep.User)
		at := opened.Add(hi).Add(time.Second - time.Nanosecond).Truncate(time.Second)
		if at.After(f.settled) || ep.CloseID != "" && ep.Closed.Before(at.Add(workerSlack)) {
			continue
		}
		due = append(due, ep)
	}
	rep.EpisodesDue = len(due)
	reasons := map[string]int{} // of suppressions
	states := map[string]int{}  // of the reminders still queued
	pipe := rdb.Pipeline()
	sets := make([]*redis.StringSliceCmd, len(due))
	for i, ep := range due {
		r := jobs.Reminder{User: ep.User, Conversation: ep.Conversation, Episode: ep.ID, Stage: 1}
		sets[i] = pipe.SMembers(ctx, ks.Sent(ks.Shard(ep.Conversation), r.ID()))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	for i, ep := range due {
		r := jobs.Reminder{User: ep.User, Conversation: ep.Conversation, Episode: ep.ID, Stage: 1}
		var o jobs.Outcome
		finished := false
		for _, m := range sets[i].Val() {
			if o, finished = jobs.ParseOutcome(m); finished {
				break
			}
		}
		switch {
		case finished && o.Metric == counters.RemindersSent:
			rep.EpisodesPushed++
		case finished && o.Metric == counters.RemindersFailed:
			rep.EpisodesFailed++
		case finished && o.Metric == counters.RemindersSuppr && o.Reason != "":
			rep.EpisodesSuppressed++
			reasons[o.Reason]++
		case finished && o.Metric == counters.RemindersCancel && ep.CloseID != "" && !o.At.Before(ep.Closed):
			rep.EpisodesCancelled++ // read after the due time, before the worker ran it
		case finished:
			read := "never read"
			if ep.CloseID != "" {
				read = "read at " + ep.Closed.Format(timeFmt)
			}
			failf("reminder %s finished as %s (reason %q) at %s; the episode was %s",
				r.ID(), o.Metric, o.Reason, o.At.Format(timeFmt), read)
		case pushed[r.ID()]:
			rep.EpisodesPushed++ // by a worker killed before it recorded the outcome
		case f.queued[r.ID()] == "scheduled":
			failf("reminder %s of an episode unread past its due time: still scheduled, never run", r.ID())
		case f.queued[r.ID()] != "":
			rep.EpisodesQueued++
			states[f.queued[r.ID()]]++
		default:
			failf("reminder %s of an episode unread past its due time: no push, no recorded outcome, not queued", r.ID())
		}
	}
	rep.EpisodesUnaccounted = rep.EpisodesDue - rep.EpisodesPushed - rep.EpisodesFailed - rep.EpisodesSuppressed -
		rep.EpisodesCancelled - rep.EpisodesQueued
	if failures > 5 {
		rep.fail("... and %d more reminder failures", failures-5)
	}
	rep.ReadMargin = margin
	log.Info("reminder checks", "due", rep.EpisodesDue, "suppressed", reasons, "queued", states,
		"pushes of episodes read later", margins, "closest read after the earliest due time", margin)
	return nil
}

const timeFmt = "15:04:05.000"
