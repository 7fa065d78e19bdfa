package jobs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/push"
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
	// Never send before the due time. enqueue rounds due times up to
	// asynq's whole seconds, but a task can still arrive early (a host
	// whose clock is ahead, a follow-up enqueued by an older version).
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
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
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
		return err
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
		return err
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

// after decides what becomes of a reminder once its devices were pushed.
func (w *Worker) after(ctx context.Context, s *sending, now time.Time, p *plan) {
	delivered := s.already || s.outstanding
	var again retry
	for _, res := range s.results {
		switch res.Outcome {
		case push.Delivered, push.Unknown: // unknown: maybe delivered
			delivered = true
		case push.TokenInvalid:
			w.log.Info("removing invalid token", "platform", res.platform, "token", push.RedactToken(res.Token), "reason", res.Reason)
			if err := w.dir.RemoveToken(ctx, res.platform, res.Token); err != nil {
				// Recorded as failed for this reminder; the next one
				// meets the token again and tries again.
				w.log.Warn("remove invalid token", "err", err)
			} else {
				w.met.tokensRemoved.WithLabelValues(res.platform).Inc()
			}
		case push.Retry:
			again.after = max(again.after, res.RetryAfter)
			again.err = fmt.Errorf("%s %s: %s", res.platform, push.RedactToken(res.Token), res.Reason)
		}
	}
	metric, reason := counters.RemindersSent, ""
	if !delivered {
		metric = counters.RemindersFailed
	}
	if again.err != nil {
		if s.r.Tries < w.cfg.MaxRetry {
			again.r = s.r
			p.retries = append(p.retries, again)
			return
		}
		if !delivered {
			reason = ReasonGaveUp
		}
	}
	// The next stage is enqueued (settle) before the reminder is marked
	// finished: a crash in between runs the task again, which enqueues it
	// again (the same task id) instead of never.
	for i, it := range s.items {
		f := finishing{r: it.r, metric: metric, reason: reason}
		if i > 0 {
			f.metric, f.reason = counters.RemindersSuppr, ReasonDigested
		}
		w.nextStage(&f, now)
		if i == 0 && metric == counters.RemindersSent {
			// For the effectiveness funnel: pushed, by stage and platform,
			// and a record on the episode that a read converts.
			platform := reachedPlatform(s.results)
			stage := strconv.Itoa(it.r.Stage)
			f.pushed = stage + "|" + platform
			if f.extra == nil {
				f.extra = map[counters.Dims]int64{}
			}
			f.extra[counters.Dims{Metric: counters.RemindersPushed, App: appOr(it.r.App), Platform: platform, Reason: stage}] = 1
		}
		p.finish = append(p.finish, f)
	}
	p.sent = append(p.sent, sendAt{s.r, now})
	for _, res := range s.results {
		if res.Outcome == push.Delivered || res.Outcome == push.Unknown {
			w.met.lateness.Observe(max(0, w.cfg.Now().Sub(s.r.DueTime()).Seconds()))
			break
		}
	}
	if len(s.items) > 1 {
		w.log.Info("digest sent", "user", s.r.User, "conversations", len(s.items))
	}
}

// reachedPlatform names the platform a reminder reached: the one of its
// devices that got it (or may have), counters.PlatformSeveral for both, ""
// when only an earlier try reached it.
func reachedPlatform(results []deviceResult) string {
	reached := ""
	for _, res := range results {
		if res.Outcome != push.Delivered && res.Outcome != push.Unknown {
			continue
		}
		if reached != "" && reached != res.platform {
			return counters.PlatformSeveral
		}
		reached = res.platform
	}
	return reached
}

// nextStage schedules the stage after f's reminder, if the ladder has one,
// with f: it is enqueued before f is marked finished.
func (w *Worker) nextStage(f *finishing, now time.Time) {
	r := f.r
	if r.Stage >= len(w.cfg.Stages) {
		return
	}
	next := Reminder{Shard: r.Shard, App: r.App, User: r.User, Conversation: r.Conversation,
		Episode: r.Episode, Stage: r.Stage + 1, Due: now.Add(w.cfg.Stages[r.Stage]).UnixMilli()}
	f.next, f.nextTTL = &next, w.cfg.Stages[r.Stage]+time.Hour
	f.extra = map[counters.Dims]int64{{Metric: counters.RemindersQueued, App: appOr(r.App)}: 1}
}

// settle carries out a plan: the next stages are enqueued, then reminders
// finished, deferred ones and ones to try again handed to follow-up tasks,
// and the rate limit counted.
func (w *Worker) settle(ctx context.Context, p *plan) error {
	var next []Reminder
	for _, f := range p.finish {
		if f.next != nil {
			next = append(next, *f.next)
		}
	}
	if len(next) > 0 {
		made, err := enqueueAll(ctx, w.client, w.cfg, next)
		if err != nil {
			return err
		}
		w.met.reminder(counters.RemindersQueued, "", made)
	}
	if len(p.finish) > 0 {
		done, err := finishAll(ctx, w.rdb, w.cfg, p.finish)
		if err != nil {
			return err
		}
		for _, f := range done {
			w.met.reminder(f.metric, f.reason, 1)
		}
	}
	if err := w.deferAll(ctx, p.defers); err != nil {
		return err
	}
	if len(p.retries) > 0 {
		now := w.cfg.Now()
		again := make([]Reminder, len(p.retries))
		for i, rt := range p.retries {
			r := rt.r
			r.Tries++
			r.Due = now.Add(RetryDelay(rt.r.Tries, &RetryError{After: rt.after, Err: rt.err}, nil)).UnixMilli()
			again[i] = r
			w.log.Warn("reminder to be tried again", "user", r.User, "conv", r.Conversation, "stage", r.Stage,
				"try", r.Tries, "at", r.DueTime(), "err", rt.err)
		}
		if _, err := enqueueAll(ctx, w.client, w.cfg, again); err != nil {
			return err
		}
	}
	return w.countSends(ctx, p.sent)
}

// deferAll puts reminders off with follow-up tasks, and counts why.
func (w *Worker) deferAll(ctx context.Context, ds []deferral) error {
	if len(ds) == 0 {
		return nil
	}
	follow := make([]Reminder, len(ds))
	for i, d := range ds {
		follow[i] = d.r
		follow[i].Defers++
		follow[i].Due = d.until.UnixMilli()
	}
	if _, err := enqueueAll(ctx, w.client, w.cfg, follow); err != nil {
		return err
	}
	// The follow-ups are enqueued: their counts are tried until Redis
	// answers, and each deferral is counted once however often this task
	// runs (countDeferrals), in Redis and in the metrics alike.
	err := retryRedis(ctx, w.log, "counting deferrals", func() error {
		counted, err := countDeferrals(ctx, w.rdb, w.cfg, ds)
		for _, d := range counted {
			w.met.reminder(counters.RemindersDefer, d.reason, 1)
		}
		ds = slices.DeleteFunc(ds, func(d deferral) bool {
			return slices.ContainsFunc(counted, func(c deferral) bool { return c.r.ID() == d.r.ID() })
		})
		return err
	})
	if err != nil {
		w.log.Error("deferrals not counted", "deferrals", len(ds), "err", err)
	}
	return nil
}

// countSends adds pushed reminders to their users' rate limit windows,
// trying until Redis answers: an uncounted send would let the limit be
// exceeded. A window is a set of reminder ids, so a reminder counted again
// (its task retried) counts once.
func (w *Worker) countSends(ctx context.Context, sent []sendAt) error {
	if len(sent) == 0 {
		return nil
	}
	return retryRedis(ctx, w.log, "counting sends in the rate limit", func() error {
		pipe := w.rdb.Pipeline()
		for _, s := range sent {
			key, end := w.rateKey(s.r.User, s.at)
			pipe.SAdd(ctx, key, s.r.ID())
			pipe.ExpireAt(ctx, key, end.Add(time.Minute))
		}
		_, err := pipe.Exec(ctx)
		return err
	})
}

// usersOf returns the distinct users of rs at idx.
func usersOf(rs []Reminder, idx []int) []string {
	seen := map[string]bool{}
	var out []string
	for _, i := range idx {
		if u := rs[i].User; !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}
