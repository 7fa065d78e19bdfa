package jobs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/push"
)

// What becomes of a task's reminders once decided and pushed: each one's
// outcome (after), the next stage of the ladder (nextStage), and the plan
// carried out (settle): next stages enqueued, reminders finished, deferred
// and retried ones handed to follow-up tasks, the rate limit counted.

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
	return distinctUsers(idx, func(i int) string { return rs[i].User })
}

// distinctUsers returns the user of each of items, each user once, in the
// order of items (nil for none).
func distinctUsers[T any](items []T, user func(T) string) []string {
	seen := make(map[string]bool, len(items))
	var out []string
	for _, it := range items {
		if u := user(it); !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}
