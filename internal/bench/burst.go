package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

// burstSlowlogUs is the SLOWLOG threshold set while a burst is applied: any
// script over it is logged, so the longest one is known.
const burstSlowlogUs = 500

// measureBurstApply publishes one message to a group of members (short
// ids, so that 10,000 fit an event) through the ingest binary and measures
// how long from XADD until every member's unread state is applied (the
// entry acknowledged with its last chunk, the last member's episode
// there), and the longest apply script meanwhile (SLOWLOG, whose
// threshold it lowers for the measurement and then restores).
func (p *pipeline) measureBurstApply(ctx context.Context, members int, res *Result) error {
	conv := "burst-apply"
	s := p.ks.Shard(conv)
	rcpt := make([]string, members)
	for i := range rcpt {
		rcpt[i] = strconv.FormatInt(int64(i), 36)
	}
	ev := &event.Event{V: 1, Type: event.TypeMessage, ID: "burst-apply-1", TS: time.Now().UnixMilli(), Conversation: conv,
		Message: "m-burst", Sender: rcpt[0], Recipients: rcpt, Preview: "all hands at 10"}

	// The ingest binary may still be starting: wait for its group.
	for deadline := time.Now().Add(time.Minute); ; {
		gs, err := p.rdb.XInfoGroups(ctx, p.ks.Stream(s)).Result()
		if err == nil && len(gs) > 0 {
			break
		}
		if err := p.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ingest made no consumer group within a minute (%v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	restore, err := lowerSlowlog(ctx, p.rdb)
	if err != nil {
		return err
	}
	defer restore()
	start := time.Now()
	id, err := p.pub.Publish(ctx, ev)
	if err != nil {
		return err
	}
	last := p.ks.Episode(s, rcpt[len(rcpt)-1], conv)
	for {
		pend, err := p.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: p.ks.Stream(s), Group: "nudge-ingest", Start: id, End: id, Count: 1}).Result()
		if err != nil {
			return fmt.Errorf("xpending: %w", err)
		}
		if len(pend) == 0 && p.rdb.Exists(ctx, last).Val() == 1 {
			break
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("the %d-member message was not applied within a minute", members)
		}
		if err := p.alive(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	res.BurstApplyMs = round(float64(time.Since(start).Microseconds())/1000, 1)
	res.BurstMembers = members
	logs, err := p.rdb.SlowLogGet(ctx, 4096).Result()
	if err != nil {
		return err
	}
	longest := time.Duration(0)
	for _, l := range logs {
		if l.Time.Before(start.Add(-time.Second)) || !strings.Contains(strings.Join(l.Args, " "), p.ks.Stream(s)) {
			continue
		}
		longest = max(longest, l.Duration)
	}
	// Below the threshold, nothing is logged: the longest script took less.
	res.BurstMaxScriptMs = round(float64(max(longest, burstSlowlogUs*time.Microsecond).Microseconds())/1000, 2)
	p.logger("burst apply", "members", members, "ms", res.BurstApplyMs, "longest script ms", res.BurstMaxScriptMs)
	return nil
}

// lowerSlowlog sets SLOWLOG to log every command over burstSlowlogUs, with
// room for many entries, after emptying it, and returns a function that
// puts the settings back.
func lowerSlowlog(ctx context.Context, rdb *redis.Client) (func(), error) {
	old, err := rdb.ConfigGet(ctx, "slowlog-*").Result()
	if err != nil {
		return nil, fmt.Errorf("config get slowlog: %w", err)
	}
	if err := rdb.ConfigSet(ctx, "slowlog-log-slower-than", strconv.Itoa(burstSlowlogUs)).Err(); err != nil {
		return nil, err
	}
	if err := rdb.ConfigSet(ctx, "slowlog-max-len", "4096").Err(); err != nil {
		return nil, err
	}
	if err := rdb.SlowLogReset(ctx).Err(); err != nil {
		return nil, err
	}
	return func() {
		for k, v := range old {
			_ = rdb.ConfigSet(context.Background(), k, v).Err()
		}
	}, nil
}

// burstDelay is the reminder delay of the burst's members: room for the
// message to be applied and its reminders scheduled before they fall due.
const burstDelay = 5 * time.Second

// measureBurstPush registers members users with one device each (a third
// APNs) and a reminder delay of burstDelay, publishes one message to all of
// them, reads each reminder's due time from its task (burstDelay after
// ingest applied the message's chunk), and measures how late each push
// reached the sandbox after it; a push before it is early. It also gives
// the p99 after publish time + burstDelay, an upper bound.
func (p *pipeline) measureBurstPush(ctx context.Context, members int, res *Result) error {
	users := make([]string, members)
	for i := range users {
		// Three base-36 digits each, apart from measureBurstApply's
		// users, so that 10,000 fit the contract's 64 KiB event.
		users[i] = strconv.FormatInt(int64(event.MaxRecipients+i), 36)
	}
	platform := func(i int) string {
		if i%3 == 2 {
			return event.PlatformAPNs
		}
		return event.PlatformFCM
	}
	d := int64(burstDelay / time.Second)
	ts := time.Now().UnixMilli()
	var evs []*event.Event
	userOf := make(map[string]string, members) // device token → user
	for i, u := range users {
		tok := sandbox.NewDeviceToken(platform(i))
		userOf[tok] = u
		evs = append(evs,
			&event.Event{V: 1, Type: event.TypeDeviceRegistered, ID: "burst-dev-" + u, TS: ts, User: u, Platform: platform(i),
				Token: tok},
			&event.Event{V: 1, Type: event.TypePrefs, ID: "burst-prefs-" + u, TS: ts, User: u, ReminderDelayS: &d})
	}
	for i := 0; i < len(evs); i += 1000 {
		if _, err := p.pub.PublishBatch(ctx, evs[i:min(i+1000, len(evs))]); err != nil {
			return err
		}
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var devices, prefs int
		if err := p.db.QueryRow(ctx, "SELECT (SELECT count(*) FROM devices WHERE user_id = ANY($1)), (SELECT count(*) FROM user_prefs WHERE user_id = ANY($1))",
			users).Scan(&devices, &prefs); err != nil {
			return err
		}
		if devices == members && prefs == members {
			break
		}
		if err := p.alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ingest stored %d devices and %d preferences of %d burst members", devices, prefs, members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.sb.Reset()
	ev := &event.Event{V: 1, Type: event.TypeMessage, ID: "burst-push-1", TS: time.Now().UnixMilli(), Conversation: "burst-push",
		Message: "m-burst-push", Sender: "burst-sender", Recipients: users, Preview: "all hands at 10"}
	published := publishTime().Add(burstDelay)
	if _, err := p.pub.Publish(ctx, ev); err != nil {
		return err
	}
	dueOf, err := p.dueTimes(ctx, "burst-push", members)
	if err != nil {
		return err
	}
	ds, err := p.waitDeliveries(ctx, members)
	if err != nil {
		return err
	}
	late := make([]time.Duration, 0, len(ds))
	afterPublish := make([]time.Duration, 0, len(ds))
	early := 0
	for _, d := range ds {
		due, ok := dueOf[userOf[d.Token]]
		if !ok {
			return fmt.Errorf("burst: a push to %s, whose reminder was not among the tasks read", push.RedactToken(d.Token))
		}
		if d.Time.Before(due) {
			early++
		}
		late = append(late, d.Time.Sub(due))
		afterPublish = append(afterPublish, d.Time.Sub(published))
	}
	slices.Sort(late)
	slices.Sort(afterPublish)
	byTime := func(a, b sandbox.Delivery) int { return a.Time.Compare(b.Time) }
	first, last := slices.MinFunc(ds, byTime).Time, slices.MaxFunc(ds, byTime).Time
	res.BurstPushes = len(ds)
	res.BurstEarly = early
	res.BurstLatenessP50Ms, res.BurstLatenessP99Ms = round(percentile(late, 50), 0), round(percentile(late, 99), 0)
	res.BurstPublishLatenessP99Ms = round(percentile(afterPublish, 99), 0)
	res.BurstPushesPerS = round(float64(len(ds)-1)/last.Sub(first).Seconds(), 0)
	p.logger("burst push", "members", members, "lateness p50 ms", res.BurstLatenessP50Ms, "p99 ms", res.BurstLatenessP99Ms,
		"p99 after publish ms", res.BurstPublishLatenessP99Ms, "pushes/s", res.BurstPushesPerS, "early", early)
	p.sb.Reset()
	return nil
}

// dueTimes reads the due time of the first reminder of each of members
// users in conversation conv from the queue's tasks, before the first of
// them falls due: the reminders are relayed to the queue within
// milliseconds of the message, seconds before they are due.
func (p *pipeline) dueTimes(ctx context.Context, conv string, members int) (map[string]time.Time, error) {
	due, err := p.queued(ctx, func(r jobs.Reminder) bool { return r.Conversation == conv && r.Stage == 1 }, members)
	if err != nil {
		return nil, fmt.Errorf("burst: %w", err)
	}
	return due, nil
}

// queued waits until n reminders that match are in the queue (scheduled,
// pending or running), and returns the due time of each by user.
func (p *pipeline) queued(ctx context.Context, match func(jobs.Reminder) bool, n int) (map[string]time.Time, error) {
	insp := asynq.NewInspectorFromRedisClient(p.rdb)
	defer insp.Close()
	deadline := time.Now().Add(burstDelay)
	for {
		due := make(map[string]time.Time, n)
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){insp.ListScheduledTasks, insp.ListPendingTasks, insp.ListActiveTasks} {
			for page := 1; ; page++ {
				tasks, err := list(p.queue, asynq.PageSize(500), asynq.Page(page))
				if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
					return nil, fmt.Errorf("list tasks: %w", err)
				}
				for _, t := range tasks {
					rs, err := jobs.DecodeTask(t.Type, t.Payload)
					if err != nil {
						return nil, fmt.Errorf("task %s: %w", t.ID, err)
					}
					for _, r := range rs {
						if match(r) {
							due[r.User] = r.DueTime()
						}
					}
				}
				if len(tasks) < 500 {
					break
				}
			}
		}
		if len(due) == n {
			return due, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d reminders in the queue after %s", len(due), n, burstDelay)
		}
		if err := p.alive(); err != nil {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
