package jobs

import (
	"context"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
)

// A task's reminders are run together, each step once for all of them: one
// pipeline reads their state, one query each reads their users' preferences
// and devices, one script per shard claims them and another records their
// pushes, the pushes go out concurrently, and one script per shard finishes
// them. A reminder alone runs the same way, at once: batching never makes a
// reminder wait for others.
//
// A reminder ends its run in one of three ways: finished (sent, failed,
// suppressed or cancelled, recorded once with its counts), put off to a
// follow-up task (deferred: the user is online, in quiet hours, over the rate
// limit), or handed to a follow-up task to try again (devices failed with a
// transient error, or its user's send lock was busy), until MaxRetry tries.
// The task itself fails, and asynq retries it whole, only when a step fails
// for all of them (Redis or PostgreSQL away); what was finished is then
// skipped.

// plan collects what a run decided for its reminders.
type plan struct {
	finish  []finishing
	defers  []deferral
	retries []retry
	sent    []sendAt   // pushed reminders, for the rate limit
	unlock  func()     // gives back the send locks taken
	busy    []Reminder // their users' send locks are held elsewhere
}

// sendAt is a reminder pushed at a time, counted in that time's rate
// window.
type sendAt struct {
	r  Reminder
	at time.Time
}

type deferral struct {
	r      Reminder
	until  time.Time
	reason string
}

type retry struct {
	r     Reminder
	after time.Duration
	err   error
}

func (p *plan) done(r Reminder, metric, reason string) {
	p.finish = append(p.finish, finishing{r: r, metric: metric, reason: reason})
}

func (p *plan) deferTo(r Reminder, t time.Time, reason string) {
	p.defers = append(p.defers, deferral{r, t, reason})
}

// run runs reminders: re-checks each, maybe puts it off, pushes, and
// schedules the next stage.
func (w *Worker) run(ctx context.Context, rs []Reminder) error {
	// Never send before the due time. asynq keeps due times in whole
	// seconds, rounded down (dueSecond), so a task comes up to a second
	// before its reminders are due, and waits here: meanwhile it warms
	// the registry (warm). A task due over 3 s later is put off instead.
	now := w.cfg.Now()
	var early plan
	var ready []Reminder
	var wait time.Duration
	for _, r := range rs {
		if d := r.DueTime().Sub(now); d > 3*time.Second {
			early.deferTo(r, r.DueTime(), ReasonEarly)
		} else {
			wait = max(wait, d)
			ready = append(ready, r)
		}
	}
	if err := w.settle(ctx, &early); err != nil {
		return err
	}
	if wait > 0 {
		until := time.Now().Add(wait) // wait is from cfg.Now, which tests may set
		w.warm(ctx, ready, until)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(until)):
		}
	}
	// One reminder of a user per round, each round settled before the
	// next: the second may be taken into the first one's digest. A
	// reminder whose user's send lock is held elsewhere goes to a later
	// round, for up to lockWait.
	deadline := time.Now().Add(lockWait)
	for len(ready) > 0 {
		var round, rest []Reminder
		seen := map[string]bool{}
		for _, r := range ready {
			if seen[r.User] {
				rest = append(rest, r)
			} else {
				seen[r.User] = true
				round = append(round, r)
			}
		}
		busy, err := w.round(ctx, round, time.Now().After(deadline))
		if err != nil {
			return err
		}
		if len(busy) > 0 && len(rest) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		ready = append(busy, rest...)
	}
	return nil
}

// warmMargin is how long before the due time a warm-up gives up; a task
// waiting less than twice that does not warm up.
const warmMargin = 20 * time.Millisecond

// warm reads the devices and preferences of rs's users into the worker's
// Directory, if it is a Warmer, while the task waits for its due time
// (until): the due time then finds them in memory. It gives up warmMargin
// before until, so that it never holds a push back, and its errors are
// left to the reads at the due time, which report them.
func (w *Worker) warm(ctx context.Context, rs []Reminder, until time.Time) {
	wm, ok := w.dir.(Warmer)
	if !ok || time.Until(until) < 2*warmMargin {
		return
	}
	wctx, cancel := context.WithDeadline(ctx, until.Add(-warmMargin))
	defer cancel()
	_ = wm.Warm(wctx, distinctUsers(rs, func(r Reminder) string { return r.User }))
}

// lockWait bounds how long a task waits for the send locks of its users
// before it hands the reminders still waiting to a later try.
const lockWait = 10 * time.Second

// round decides, pushes and settles reminders of distinct users. Their
// send locks are held until the reminders are finished: a reminder taken
// into a digest is marked finished before another task of its user can
// look at it. It returns the reminders whose users' locks are busy, or,
// once late, hands them to a later try.
func (w *Worker) round(ctx context.Context, rs []Reminder, late bool) ([]Reminder, error) {
	var p plan
	defer func() {
		if p.unlock != nil {
			p.unlock()
		}
	}()
	if err := w.decide(ctx, rs, &p); err != nil {
		return nil, err
	}
	if late {
		// Not a try: nothing was pushed. The lock is renewed only while
		// its holder runs; a crashed worker's lock is gone within lockTTL.
		for _, r := range p.busy {
			p.deferTo(r, w.cfg.Now().Add(time.Second), ReasonLockBusy)
		}
		p.busy = nil
	}
	return p.busy, w.settle(ctx, &p)
}

// decide decides and pushes reminders of distinct users.
func (w *Worker) decide(ctx context.Context, rs []Reminder, p *plan) error {
	now := w.cfg.Now()
	sts, err := w.readStates(ctx, rs, now)
	if err != nil {
		return err
	}
	// Read, or not opened yet: ingest's relay may schedule a reminder
	// before the entry that opens the episode is acknowledged, and ingest
	// may be down in between (a crash, a Redis outage) for longer than a
	// short reminder delay.
	var gone, live []int
	for i, r := range rs {
		switch st := sts[i]; {
		case st.ep.id != r.Episode || st.ep.n == 0:
			gone = append(gone, i)
		case !st.done: // finished: sent already (a retry, or part of a digest)
			live = append(live, i)
		case st.outcome.Metric == counters.RemindersSent || st.outcome.Metric == counters.RemindersFailed:
			// Pushed by an earlier run of this task, which may have ended
			// before it counted the send in the rate limit: counted
			// again, in the window of its push (a set: once).
			p.sent = append(p.sent, sendAt{r, st.outcome.At})
		}
	}
	if len(gone) > 0 {
		check := make([]Reminder, len(gone))
		for j, i := range gone {
			check[j] = rs[i]
		}
		applied, err := w.entriesApplied(ctx, check)
		if err != nil {
			return err
		}
		for j, r := range check {
			if applied[j] {
				p.done(r, counters.RemindersCancel, "")
			} else {
				p.deferTo(r, now.Add(notAppliedRetry), ReasonNotApplied)
			}
		}
	}
	if len(live) == 0 {
		return nil
	}
	prefs, err := w.dir.PrefsOf(ctx, usersOf(rs, live))
	if err != nil {
		return fromRegistry(err)
	}
	var sendable []int
	for _, i := range live {
		r, st, pr := rs[i], sts[i], prefs[rs[i].User]
		switch pr.Mode(r.Conversation) {
		case event.ModeMuted:
			p.done(r, counters.RemindersSuppr, ReasonMuted)
			continue
		case event.ModeMentions:
			if !st.ep.mentioned {
				p.done(r, counters.RemindersSuppr, ReasonMentionsOnly)
				continue
			}
		}
		if !st.onlineUntil.IsZero() {
			p.deferTo(r, st.onlineUntil, ReasonOnline)
			continue
		}
		if pr.QuietStart >= 0 {
			loc, err := event.LoadLocation(pr.TimeZone)
			if pr.TimeZone == "" || err != nil {
				loc = time.UTC
			}
			if until := quietUntil(now, loc, pr.QuietStart, pr.QuietEnd); !until.IsZero() {
				p.deferTo(r, until, ReasonQuietHours)
				continue
			}
		}
		if st.rate >= w.cfg.RateLimit {
			p.deferTo(r, st.windowEnd, ReasonRateLimited)
			continue
		}
		sendable = append(sendable, i)
	}
	if len(sendable) == 0 {
		return nil
	}
	if w.cfg.DigestWindow > 0 {
		locked, unlock, err := w.lockAll(ctx, usersOf(rs, sendable))
		if err != nil {
			return err
		}
		p.unlock = unlock
		var kept []int
		for _, i := range sendable {
			if locked[rs[i].User] {
				kept = append(kept, i)
			} else {
				p.busy = append(p.busy, rs[i])
			}
		}
		sendable = kept
	}
	devices, err := w.dir.DevicesOf(ctx, usersOf(rs, sendable))
	if err != nil {
		return fromRegistry(err)
	}
	var ss []*sending
	set := w.apps.Current()
	for _, i := range sendable {
		r, st := rs[i], sts[i]
		devs := devices[r.User]
		if len(devs) == 0 {
			// Not the end of the ladder: a device registered later hears
			// of the conversation at the next stage.
			f := finishing{r: r, metric: counters.RemindersSuppr, reason: ReasonNoDevices}
			w.nextStage(&f, now)
			p.finish = append(p.finish, f)
			continue
		}
		items := []digestItem{{r: r, n: st.ep.n, sender: st.sender, preview: st.preview, title: st.title, message: st.message, known: true}}
		if r.Stage == 1 && w.cfg.DigestWindow > 0 && len(st.unread) > 1 {
			more, err := w.digestCandidates(ctx, r, prefs[r.User], st.unread, now)
			if err != nil {
				return err
			}
			items = append(items, more...)
		}
		badge := 0
		for _, n := range st.unread {
			badge += int(n)
		}
		d, err := w.draft(ctx, items, badge)
		if err != nil {
			return err
		}
		targets := make([]target, len(devs))
		for j, dev := range devs {
			targets[j] = w.target(set, d, dev, prefs[r.User], appOr(r.App))
		}
		ss = append(ss, &sending{r: r, items: items, devices: devs, targets: targets, already: len(st.sent) > 0})
	}
	if len(ss) == 0 {
		return nil
	}
	if err := w.claim(ctx, ss); err != nil {
		return err
	}
	w.pushAll(ctx, ss)
	if err := w.record(ctx, ss); err != nil {
		return err
	}
	for _, s := range ss {
		if !s.finished {
			w.after(ctx, s, now, p)
		}
	}
	return nil
}
