package jobs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

// Directory is what the worker needs of the registry.
type Directory interface {
	Devices(ctx context.Context, user string) ([]registry.Device, error)
	Prefs(ctx context.Context, user string) (registry.Prefs, error)
	RemoveToken(ctx context.Context, platform, token string) error
}

// Reasons a reminder is dropped or put off, as counter reasons.
const (
	ReasonRead         = "read"          // the episode ended before the reminder was due
	ReasonMuted        = "muted"         // the user muted the conversation
	ReasonMentionsOnly = "mentions_only" // mentions only, and not mentioned
	ReasonNoDevices    = "no_devices"    // the user has no push device
	ReasonDigested     = "digested"      // sent as part of another reminder's digest
	ReasonOnline       = "online"        // put off: the user is online
	ReasonQuietHours   = "quiet_hours"   // put off: quiet hours in the user's time zone
	ReasonRateLimited  = "rate_limited"  // put off: the user got RateLimit reminders this window
	ReasonNotApplied   = "not_applied"   // put off: ingest has not applied the opening message yet
)

// RetryError asks asynq to retry the task after After (a provider's
// Retry-After); RetryDelay reads it.
type RetryError struct {
	After time.Duration
	Err   error
}

func (e *RetryError) Error() string { return fmt.Sprintf("retry after %s: %v", e.After, e.Err) }
func (e *RetryError) Unwrap() error { return e.Err }

// RetryDelay is the asynq RetryDelayFunc for reminders: a provider's
// Retry-After when there is one, else exponential backoff from 2s capped
// at 5 minutes.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var re *RetryError
	if errors.As(err, &re) && re.After > 0 {
		return re.After
	}
	d := 2 * time.Second << min(n, 10)
	return min(d, 5*time.Minute)
}

// Worker runs reminder tasks. Register it with an asynq.ServeMux for
// TypeReminder.
type Worker struct {
	cfg     Config
	rdb     redis.UniversalClient
	client  *asynq.Client
	dir     Directory
	senders map[string]push.Sender
	log     *slog.Logger
	met     *metrics
}

var _ asynq.Handler = (*Worker)(nil)

// NewWorker returns a Worker. senders maps a platform (event.PlatformFCM,
// event.PlatformAPNs) to its Sender; a platform without one counts its
// devices as failed with reason "no_sender".
func NewWorker(rdb redis.UniversalClient, client *asynq.Client, dir Directory, senders map[string]push.Sender, cfg Config) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, rdb: rdb, client: client, dir: dir, senders: senders, log: cfg.Logger.With("component", "worker"),
		met: newMetrics(cfg.Metrics)}, nil
}

// episodeState is an open episode as ingest keeps it.
type episodeState struct {
	id        string
	n         int64
	since     int64
	mentioned bool
}

func (w *Worker) episode(ctx context.Context, shard int, user, conv string) (episodeState, error) {
	v, err := w.rdb.HMGet(ctx, w.cfg.Keyspace.Episode(shard, user, conv), "id", "n", "since", "m").Result()
	if err != nil {
		return episodeState{}, fmt.Errorf("episode state: %w", err)
	}
	return parseEpisode(v), nil
}

// parseEpisode reads the reply of HMGET episode id n since m.
func parseEpisode(v []any) episodeState {
	var st episodeState
	if len(v) != 4 {
		return st
	}
	st.id, _ = v[0].(string)
	n, _ := v[1].(string)
	st.n, _ = strconv.ParseInt(n, 10, 64)
	since, _ := v[2].(string)
	st.since, _ = strconv.ParseInt(since, 10, 64)
	m, _ := v[3].(string)
	st.mentioned = m == "1"
	return st
}

// ProcessTask runs one reminder: re-check, maybe put off, push, and
// schedule the next stage.
func (w *Worker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	r, err := decodeReminder(t)
	if err == nil && r.Shard >= w.cfg.Keyspace.Shards {
		err = fmt.Errorf("%w: shard %d of %d", ErrBadPayload, r.Shard, w.cfg.Keyspace.Shards)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := w.log.With("user", r.User, "conv", r.Conversation, "episode", r.Episode, "stage", r.Stage)

	// Never send before the due time. enqueue rounds due times up to
	// asynq's whole seconds, but a task can still arrive early (a host whose
	// clock is ahead, a follow-up enqueued by an older version): wait.
	if wait := r.DueTime().Sub(w.cfg.Now()); wait > 0 {
		if wait > 3*time.Second {
			return w.deferTo(ctx, r, r.DueTime(), "early")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}

	now := w.cfg.Now()
	st, err := w.read(ctx, r, now)
	if err != nil {
		return err
	}
	if st.ep.id != r.Episode || st.ep.n == 0 {
		// Read, or not opened yet: ingest schedules the first reminder
		// before it applies the batch that opens the episode, and may be
		// down in between (a crash, a Redis outage) for longer than a
		// short reminder delay.
		applied, err := w.entryApplied(ctx, r.Shard, r.Episode)
		if err != nil {
			return err
		}
		if !applied {
			return w.deferTo(ctx, r, now.Add(notAppliedRetry), ReasonNotApplied)
		}
		return w.finish(ctx, r, counters.RemindersCancel, "", nil)
	}
	if st.done {
		return nil // sent already (a retry, or part of a digest)
	}
	prefs, err := w.dir.Prefs(ctx, r.User)
	if err != nil {
		return err
	}
	switch prefs.Mode(r.Conversation) {
	case event.ModeMuted:
		return w.finish(ctx, r, counters.RemindersSuppr, ReasonMuted, nil)
	case event.ModeMentions:
		if !st.ep.mentioned {
			return w.finish(ctx, r, counters.RemindersSuppr, ReasonMentionsOnly, nil)
		}
	}
	if !st.onlineUntil.IsZero() {
		return w.deferTo(ctx, r, st.onlineUntil, ReasonOnline)
	}
	if prefs.QuietStart >= 0 {
		loc, err := event.LoadLocation(prefs.TimeZone)
		if prefs.TimeZone == "" || err != nil {
			loc = time.UTC
		}
		if until := quietUntil(now, loc, prefs.QuietStart, prefs.QuietEnd); !until.IsZero() {
			return w.deferTo(ctx, r, until, ReasonQuietHours)
		}
	}
	if st.rate >= w.cfg.RateLimit {
		return w.deferTo(ctx, r, st.windowEnd, ReasonRateLimited)
	}

	if w.cfg.DigestWindow > 0 {
		// One send per user at a time: a reminder of the same user running
		// now may take this one into its digest.
		unlock, err := w.lock(ctx, r.User)
		if err != nil {
			return err
		}
		defer unlock()
		if done, err := w.rdb.SIsMember(ctx, w.sentKey(r), doneMember).Result(); err != nil || done {
			return err
		}
	}

	devices, err := w.dir.Devices(ctx, r.User)
	if err != nil {
		return err
	}
	if len(devices) == 0 {
		return w.finish(ctx, r, counters.RemindersSuppr, ReasonNoDevices, nil)
	}

	items := []digestItem{{r: r, n: st.ep.n, sender: st.sender, preview: st.preview, known: true}}
	if r.Stage == 1 && w.cfg.DigestWindow > 0 {
		more, err := w.digestCandidates(ctx, r, prefs, st.unread, now)
		if err != nil {
			return err
		}
		items = append(items, more...)
	}
	badge := 0
	for _, n := range st.unread {
		badge += int(n)
	}
	msg, err := w.message(ctx, items, badge)
	if err != nil {
		return err
	}
	delivered, pushes, err := w.send(ctx, r, msg, devices, st.sent, log)
	if err != nil {
		if len(pushes) > 0 { // the pushes of a failed attempt count too
			if cerr := counters.Add(ctx, w.rdb, w.cfg.Keyspace, r.Shard, now, pushes); cerr != nil {
				log.Warn("count pushes", "err", cerr)
			}
		}
		return err
	}
	metric := counters.RemindersSent
	if !delivered {
		metric = counters.RemindersFailed
	}
	// The next stage is scheduled before the reminder is marked finished:
	// a crash in between retries the task, which schedules it again (the
	// same task id) instead of never.
	for i, it := range items {
		extra, err := w.next(ctx, it.r, now)
		if err != nil {
			return err
		}
		m, reason := metric, ""
		if i == 0 {
			for d, n := range pushes {
				extra[d] += n
			}
		} else {
			m, reason = counters.RemindersSuppr, ReasonDigested
		}
		if err := w.finish(ctx, it.r, m, reason, extra); err != nil {
			return err
		}
	}
	pipe := w.rdb.Pipeline()
	pipe.Incr(ctx, st.rateKey)
	pipe.ExpireAt(ctx, st.rateKey, st.windowEnd.Add(time.Minute))
	if _, err := pipe.Exec(ctx); err != nil {
		log.Warn("rate limit count", "err", err)
	}
	if len(items) > 1 {
		log.Info("digest sent", "conversations", len(items))
	}
	return nil
}

// recordWait bounds how long recordDelivered keeps trying: less than
// asynq's 30 s task lease, which is not extended while Redis is away.
const recordWait = 20 * time.Second

// recordDelivered adds the digests of devices just pushed to the
// reminder's sent set. The pushes went out: a record lost to a Redis
// restart would have the task's retry push them again, so a failure is
// tried again until Redis answers, for up to recordWait.
func (w *Worker) recordDelivered(ctx context.Context, key string, digests []any, log *slog.Logger) error {
	deadline := time.Now().Add(recordWait)
	wait := 50 * time.Millisecond
	for {
		pipe := w.rdb.TxPipeline()
		pipe.SAdd(ctx, key, digests...)
		pipe.Expire(ctx, key, w.cfg.SentTTL)
		_, err := pipe.Exec(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		log.Warn("recording deliveries failed; trying again", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// notAppliedRetry is how long a reminder whose episode has not been
// applied yet waits before it looks again.
const notAppliedRetry = 2 * time.Second

// entryApplied reports whether ingest has applied the stream entry id of
// shard: its consumer group has read past it and it is not pending. A
// missing stream or group counts as applied (nothing will apply it).
func (w *Worker) entryApplied(ctx context.Context, shard int, id string) (bool, error) {
	stream := w.cfg.Keyspace.Stream(shard)
	pipe := w.rdb.Pipeline()
	groups := pipe.XInfoGroups(ctx, stream)
	pending := pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: w.cfg.IngestGroup, Start: id, End: id, Count: 1})
	_, _ = pipe.Exec(ctx)
	gs, err := groups.Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return true, nil
		}
		return false, fmt.Errorf("ingest group of shard %d: %w", shard, err)
	}
	for _, g := range gs {
		if g.Name != w.cfg.IngestGroup {
			continue
		}
		if !idAtOrBefore(id, g.LastDeliveredID) {
			return false, nil // not read yet
		}
		p, err := pending.Result()
		if err != nil {
			return false, fmt.Errorf("pending of shard %d: %w", shard, err)
		}
		return len(p) == 0, nil
	}
	return true, nil
}

// idAtOrBefore reports whether stream entry id a is at or before b
// ("<ms>-<seq>"). An id that does not parse counts as before.
func idAtOrBefore(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	ams, err1 := strconv.ParseUint(am, 10, 64)
	bms, err2 := strconv.ParseUint(bm, 10, 64)
	aseq, _ := strconv.ParseUint(as, 10, 64)
	bseq, _ := strconv.ParseUint(bs, 10, 64)
	if err1 != nil || err2 != nil {
		return true
	}
	return ams < bms || ams == bms && aseq <= bseq
}

// state is what a reminder needs to know from Redis, read in one round
// trip: the episode, the devices already reached, presence, the rate
// limit, the user's unread conversations and the conversation's last
// message.
type state struct {
	ep              episodeState
	done            bool
	sent            []string // device digests already reached
	onlineUntil     time.Time
	rate            int
	rateKey         string
	windowEnd       time.Time
	unread          map[string]int64 // conversation -> unread, over all shards
	sender, preview string
}

func (w *Worker) read(ctx context.Context, r Reminder, now time.Time) (state, error) {
	ks := w.cfg.Keyspace
	st := state{unread: map[string]int64{}}
	st.rateKey, st.windowEnd = w.rateKey(r.User, now)
	userShard := ks.Shard(r.User)
	pipe := w.rdb.Pipeline()
	ep := pipe.HMGet(ctx, ks.Episode(r.Shard, r.User, r.Conversation), "id", "n", "since", "m")
	sent := pipe.SMembers(ctx, w.sentKey(r))
	presence := pipe.ZRevRangeWithScores(ctx, ks.Presence(userShard, r.User), 0, 0)
	rate := pipe.Get(ctx, st.rateKey)
	conv := pipe.HMGet(ctx, ks.Conversation(r.Shard, r.Conversation), "sender", "preview")
	badges := make([]*redis.MapStringStringCmd, ks.Shards)
	for s := range badges {
		badges[s] = pipe.HGetAll(ctx, ks.Badge(s, r.User))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return st, fmt.Errorf("reminder state: %w", err)
	}
	st.ep = parseEpisode(ep.Val())
	for _, m := range sent.Val() {
		switch {
		case m == doneMember:
			st.done = true
		case !strings.HasPrefix(m, "!"): // marks start with "!", device digests never do
			st.sent = append(st.sent, m)
		}
	}
	if z := presence.Val(); len(z) > 0 && int64(z[0].Score) > now.UnixMilli() {
		st.onlineUntil = time.UnixMilli(int64(z[0].Score)).Add(time.Second)
	}
	st.rate, _ = strconv.Atoi(rate.Val())
	if v := conv.Val(); len(v) == 2 {
		st.sender, _ = v[0].(string)
		st.preview, _ = v[1].(string)
	}
	for _, c := range badges {
		for conv, v := range c.Val() {
			if n, _ := strconv.ParseInt(v, 10, 64); n > 0 {
				st.unread[conv] = n
			}
		}
	}
	return st, nil
}

// unlockScript deletes a lock if it still holds our token.
//
// KEYS[1] lock; ARGV[1] token.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// lock takes the user's send lock, waiting up to 10s for it.
func (w *Worker) lock(ctx context.Context, user string) (func(), error) {
	ks := w.cfg.Keyspace
	key := ks.SendLock(ks.Shard(user), user)
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := w.rdb.SetNX(ctx, key, token, time.Minute).Result()
		if err != nil {
			return nil, fmt.Errorf("send lock: %w", err)
		}
		if ok {
			return func() {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				unlockScript.Run(ctx, w.rdb, []string{key}, token)
			}, nil
		}
		if time.Now().After(deadline) {
			return nil, &RetryError{After: time.Second, Err: errors.New("send lock of the user is busy")}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *Worker) sentKey(r Reminder) string { return w.cfg.Keyspace.Sent(r.Shard, r.ID()) }

// finish records that a reminder is done (sent, dropped or cancelled) and
// counts it with metric and reason, exactly once whatever the retries. The
// outcome stays in the sent set for SentTTL (see Outcome).
func (w *Worker) finish(ctx context.Context, r Reminder, metric, reason string, extra map[counters.Dims]int64) error {
	finished, err := finishReminder(ctx, w.rdb, w.cfg, r, metric, reason, extra, 0)
	if err != nil {
		return err
	}
	if finished {
		w.met.reminder(metric, reason, 1)
	}
	return nil
}

// deferTo puts a reminder off until t with a follow-up task, and counts why.
func (w *Worker) deferTo(ctx context.Context, r Reminder, t time.Time, reason string) error {
	follow := r
	follow.Defers++
	follow.Due = t.UnixMilli()
	if _, err := enqueue(ctx, w.client, w.cfg, follow); err != nil {
		return err
	}
	w.met.reminder(counters.RemindersDefer, reason, 1)
	err := counters.Add(ctx, w.rdb, w.cfg.Keyspace, r.Shard, w.cfg.Now(),
		map[counters.Dims]int64{{Metric: counters.RemindersDefer, App: appOr(r.App), Reason: reason}: 1})
	if err != nil {
		w.log.Warn("count deferral", "err", err)
	}
	return nil
}

// next schedules the next stage of the ladder, if any.
func (w *Worker) next(ctx context.Context, r Reminder, now time.Time) (map[counters.Dims]int64, error) {
	extra := map[counters.Dims]int64{}
	if r.Stage >= len(w.cfg.Stages) {
		return extra, nil
	}
	n := Reminder{Shard: r.Shard, App: r.App, User: r.User, Conversation: r.Conversation, Episode: r.Episode,
		Stage: r.Stage + 1, Due: now.Add(w.cfg.Stages[r.Stage]).UnixMilli()}
	made, err := enqueue(ctx, w.client, w.cfg, n)
	if err != nil {
		return nil, err
	}
	if made {
		w.met.reminder(counters.RemindersQueued, "", 1)
	}
	// Counted with the reminder's finish, so once.
	extra[counters.Dims{Metric: counters.RemindersQueued, App: appOr(r.App)}] = 1
	return extra, nil
}

func (w *Worker) rateKey(user string, now time.Time) (string, time.Time) {
	win := now.UnixMilli() / w.cfg.RateWindow.Milliseconds()
	ks := w.cfg.Keyspace
	return ks.RateLimit(ks.Shard(user), user, win), time.UnixMilli((win + 1) * w.cfg.RateWindow.Milliseconds())
}

type digestItem struct {
	r               Reminder
	n               int64 // unread messages
	sender, preview string
	known           bool // sender and preview read already
}

// maxDigest caps the conversations of one digest push.
const maxDigest = 20

// digestCandidates finds the user's other first reminders due within the
// digest window that would be sent: they go out with this one.
func (w *Worker) digestCandidates(ctx context.Context, r Reminder, prefs registry.Prefs, all map[string]int64, now time.Time) ([]digestItem, error) {
	unread := make(map[string]int64, len(all))
	for c, n := range all {
		if c != r.Conversation {
			unread[c] = n
		}
	}
	convs := make([]string, 0, len(unread))
	for c := range unread {
		if prefs.Mode(c) != event.ModeMuted {
			convs = append(convs, c)
		}
	}
	sort.Strings(convs)
	delay := w.cfg.Stages[0]
	if prefs.ReminderDelay > 0 {
		delay = prefs.ReminderDelay
	}
	var out []digestItem
	for _, c := range convs {
		if len(out) >= maxDigest-1 {
			break
		}
		shard := w.cfg.Keyspace.Shard(c)
		st, err := w.episode(ctx, shard, r.User, c)
		if err != nil {
			return nil, err
		}
		if st.id == "" || st.n == 0 || prefs.Mode(c) == event.ModeMentions && !st.mentioned {
			continue
		}
		due := time.UnixMilli(st.since).Add(delay)
		if due.After(now.Add(w.cfg.DigestWindow)) {
			continue
		}
		other := Reminder{Shard: shard, App: r.App, User: r.User, Conversation: c, Episode: st.id, Stage: 1, Due: due.UnixMilli()}
		done, err := w.rdb.SIsMember(ctx, w.sentKey(other), doneMember).Result()
		if err != nil {
			return nil, err
		}
		if !done {
			out = append(out, digestItem{r: other, n: st.n})
		}
	}
	return out, nil
}

// message builds the push: one conversation's last message, or a digest.
func (w *Worker) message(ctx context.Context, items []digestItem, badge int) (push.Message, error) {
	type last struct{ sender, preview string }
	lasts := make([]last, len(items))
	var total int64
	for i, it := range items {
		total += it.n
		if it.known {
			lasts[i].sender, lasts[i].preview = it.sender, it.preview
			continue
		}
		v, err := w.rdb.HMGet(ctx, w.cfg.Keyspace.Conversation(it.r.Shard, it.r.Conversation), "sender", "preview").Result()
		if err != nil {
			return push.Message{}, fmt.Errorf("conversation: %w", err)
		}
		lasts[i].sender, _ = v[0].(string)
		lasts[i].preview, _ = v[1].(string)
	}
	r := items[0].r
	data := map[string]string{"episode": r.Episode, "stage": strconv.Itoa(r.Stage), "unread": strconv.FormatInt(total, 10)}
	line := func(l last) string {
		switch {
		case l.sender != "" && l.preview != "":
			return l.sender + ": " + l.preview
		case l.sender != "":
			return "New message from " + l.sender
		}
		return "New message"
	}
	if len(items) == 1 {
		title := "New message"
		if items[0].n > 1 {
			title = strconv.FormatInt(items[0].n, 10) + " unread messages"
		}
		return push.Message{Title: title, Body: line(lasts[0]), ConversationID: r.Conversation,
			CollapseKey: collapseKey(r.Conversation), ThreadID: r.Conversation, Badge: badge, Data: data}, nil
	}
	var body strings.Builder
	convs := make([]string, len(items))
	for i, it := range items {
		convs[i] = it.r.Conversation
		if i > 0 {
			body.WriteByte('\n')
		}
		body.WriteString(line(lasts[i]))
	}
	data["conversations"] = strings.Join(convs, ",")
	return push.Message{
		Title:          fmt.Sprintf("%d conversations, %d unread messages", len(items), total),
		Body:           body.String(),
		ConversationID: r.Conversation,
		CollapseKey:    "nudge-digest",
		ThreadID:       "nudge-digest",
		Badge:          badge,
		Data:           data,
	}, nil
}

// collapseKey fits a conversation id in the 64 bytes providers allow.
func collapseKey(conv string) string {
	if len(conv) <= 64 {
		return conv
	}
	h := sha256.Sum256([]byte(conv))
	return hex.EncodeToString(h[:16])
}

// tokenDigest names a device in a sent set without storing its token.
func tokenDigest(platform, token string) string {
	h := sha256.Sum256([]byte(platform + ":" + token))
	return hex.EncodeToString(h[:12])
}

// send pushes msg to the devices that have not got this reminder yet
// (already holds the digests of those that have), records each delivery
// at once, removes invalid tokens, and returns a RetryError if some devices
// should be tried again later. delivered reports whether any device got it;
// pushes counts what happened to each device, for the counters.
func (w *Worker) send(ctx context.Context, r Reminder, msg push.Message, devices []registry.Device, already []string, log *slog.Logger) (delivered bool, pushes map[counters.Dims]int64, err error) {
	sentKey := w.sentKey(r)
	got := map[string]bool{}
	for _, d := range already {
		got[d] = true
	}
	delivered = len(already) > 0
	byPlatform := map[string][]string{}
	for _, d := range devices {
		if !got[tokenDigest(d.Platform, d.Token)] {
			byPlatform[d.Platform] = append(byPlatform[d.Platform], d.Token)
		}
	}
	var retryAfter time.Duration
	var retryErr error
	extra := map[counters.Dims]int64{}
	app := appOr(r.App)
	for _, platform := range []string{event.PlatformFCM, event.PlatformAPNs} {
		tokens := byPlatform[platform]
		if len(tokens) == 0 {
			continue
		}
		sender := w.senders[platform]
		if sender == nil {
			extra[counters.Dims{Metric: counters.PushFailed, App: app, Platform: platform, Reason: "no_sender"}] += int64(len(tokens))
			w.met.push.WithLabelValues(platform, push.Failed.String(), "no_sender").Add(float64(len(tokens)))
			continue
		}
		start := time.Now()
		results, err := sender.Send(ctx, msg, tokens)
		w.met.pushDuration.WithLabelValues(platform).Observe(time.Since(start).Seconds())
		var ok []any
		for _, res := range results {
			w.met.push.WithLabelValues(platform, res.Outcome.String(), res.Reason).Inc()
			switch res.Outcome {
			case push.Delivered:
				ok = append(ok, tokenDigest(platform, res.Token))
				extra[counters.Dims{Metric: counters.PushSent, App: app, Platform: platform}]++
			case push.TokenInvalid:
				log.Info("removing invalid token", "platform", platform, "token", push.RedactToken(res.Token), "reason", res.Reason)
				if rerr := w.dir.RemoveToken(ctx, platform, res.Token); rerr != nil {
					return delivered, extra, rerr
				}
				extra[counters.Dims{Metric: counters.TokensRemoved, App: app, Platform: platform, Reason: res.Reason}]++
				w.met.tokensRemoved.WithLabelValues(platform).Inc()
			case push.Retry:
				retryAfter = max(retryAfter, res.RetryAfter)
				retryErr = fmt.Errorf("%s %s: %s", platform, push.RedactToken(res.Token), res.Reason)
			default:
				extra[counters.Dims{Metric: counters.PushFailed, App: app, Platform: platform, Reason: res.Reason}]++
			}
		}
		if len(ok) > 0 {
			delivered = true
			// Record deliveries before anything else can fail, so a retry
			// never pushes these devices again.
			if perr := w.recordDelivered(ctx, sentKey, ok, log); perr != nil {
				return delivered, extra, fmt.Errorf("record deliveries: %w", perr)
			}
		}
		if err != nil && results == nil {
			return delivered, extra, fmt.Errorf("send %s: %w", platform, err)
		}
	}
	if retryErr != nil {
		return delivered, extra, &RetryError{After: retryAfter, Err: retryErr}
	}
	return delivered, extra, nil
}
