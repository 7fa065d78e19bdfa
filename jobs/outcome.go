package jobs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/keys"
)

// Outcome is how a reminder finished: the counter metric and reason it was
// counted with, and when. The worker records it in the reminder's sent set
// (keys.Sent) as the member "!outcome:<metric>:<reason>:<unix ms>", in the
// same script step as the "!done" mark, so a finished reminder always has
// exactly one. It is evidence for checks (the chaos run) and for whoever
// asks why a reminder was or was not pushed.
//
// The time of an outcome the worker records is Redis's, read inside that
// script step: the clock of the node holding the shard, which also dates
// the shard's stream entries. So an outcome earlier than an entry's id was
// recorded before the entry was even published, whatever the clocks of
// the machines running the worker and ingest say. (A cancellation the
// scheduler records carries the scheduler's clock.)
type Outcome struct {
	// Metric is counters.RemindersSent, RemindersFailed, RemindersSuppr or
	// RemindersCancel.
	Metric string
	// Reason is a Reason* constant for a suppressed reminder, else "".
	Reason string
	// At is when the reminder finished, to the millisecond.
	At time.Time
}

const outcomePrefix = "!outcome:"

func (o Outcome) member() string {
	return o.memberPrefix() + strconv.FormatInt(o.At.UnixMilli(), 10)
}

// memberPrefix is the member without its time, which finishScript adds.
func (o Outcome) memberPrefix() string { return outcomePrefix + o.Metric + ":" + o.Reason + ":" }

// ParseOutcome reads the outcome member of a sent set; ok is false for any
// other member (a device digest, "!done").
func ParseOutcome(member string) (o Outcome, ok bool) {
	rest, ok := strings.CutPrefix(member, outcomePrefix)
	if !ok {
		return o, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 || parts[0] == "" {
		return o, false
	}
	ms, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return o, false
	}
	return Outcome{Metric: parts[0], Reason: parts[1], At: time.UnixMilli(ms)}, true
}

// Members of a reminder's sent set (keys.Sent) besides the outcome. Marks
// start with "!"; a device digest (tokenDigest) never does.
const (
	// doneMember marks a reminder finished.
	doneMember = "!done"
	// queuedMember marks a reminder scheduled: a read cancels it (cancel)
	// unless it is finished or claimed.
	queuedMember = "!q"
	// claimMember marks a reminder a worker is pushing: a read no longer
	// cancels it, the worker finishes it.
	claimMember = "!c"
	// A device's digest alone: the device got the reminder. With a
	// prefix:
	intentPrefix  = "!i:" // about to be pushed; never pushed again
	failedPrefix  = "!f:" // refused for good (or its token removed)
	unknownPrefix = "!u:" // pushed, and the provider's answer was lost
)

// countedHead starts each script that counts, after its "#!lua" line:
// count(field, n) adds n to a counter field. The counts are summed in the
// script and written by countedTail, one HINCRBY per field however many
// reminders of the call it counts (a burst's reminders share a few
// fields). Every such script takes KEYS[1] counters hash, KEYS[2] counter
// index, ARGV[1] minute, ARGV[2] counters TTL (counterArgs).
const countedHead = `
local counts, counted = {}, false
local function count(field, n)
  counts[field] = (counts[field] or 0) + n
  counted = true
end
`

// countedTail ends each script that counts: it writes the counts, lists
// the minute in the shard's counter index, and gives the counters hash
// and the index their lifetime when it listed the minute. A minute found
// listed has its hash, made with a TTL by whoever listed it (ingest's
// apply.lua does the same; the flusher takes both away together, and gives
// a snapshot without a TTL one).
const countedTail = `
if counted then
  for field, n in pairs(counts) do
    redis.call('HINCRBY', KEYS[1], field, n)
  end
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[1]) == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  end
end
`

// counterArgs returns the keys and arguments a counting script starts
// with (countedTail): the shard's counters hash of minute and its index,
// the minute and the counters' TTL.
func counterArgs(ks keys.Keyspace, shard int, minute int64) ([]string, []any) {
	return []string{ks.Counters(shard, minute), ks.CounterIndex(shard)}, []any{minute, int64(counters.SafetyTTL / time.Second)}
}

// finishing is a reminder to mark finished, with the counts that go with
// it.
type finishing struct {
	r              Reminder
	metric, reason string
	extra          map[counters.Dims]int64
	ttl            time.Duration // of the record; 0: SentTTL
	next           *Reminder     // the next stage, scheduled: marked queued
	nextTTL        time.Duration
	// pushed, for a reminder pushed, is "stage|platform": recorded on its
	// episode with the outcome's time, for ingest to attribute a read to it
	// (a conversion).
	pushed string
}

// finishScript marks reminders of one shard finished, records each one's
// outcome beside the mark and counts it, once; it marks the next stage of
// each, if scheduled, queued.
//
// KEYS[1] counters hash, KEYS[2] counter index, then for each reminder
// KEYS[3i] its sent set, KEYS[3i+1] the sent set of its next stage (its
// own again when there is none) and KEYS[3i+2] its episode. ARGV[1]
// minute, ARGV[2] counters TTL (s), then for each reminder: sent TTL (s),
// outcome member without its time (Outcome.memberPrefix), next stage's TTL
// (s; 0: none), its episode id, its push record ("stage|platform", "" if
// not pushed), the number k of counter fields, then k field, increment
// pairs. Returns for each reminder 1 if this call finished it, else 0 (it
// was finished before; nothing is counted).
//
// The outcome's time is Redis's (TIME, in ms). A push record goes on the
// episode, as "stage|ms|platform" appended to its field rs (comma
// separated: one per stage pushed, so a read is attributed to the last
// stage pushed before the read was published), only while it is the same
// episode, still open (a read may have closed it meanwhile).
var finishScript = datastore.NewScript("worker", `#!lua`+countedHead+`
local out, a = {}, 3
local t = redis.call('TIME')
local ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for i = 1, (#KEYS - 2) / 3 do
  local sent, nxt, ep = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
  local ttl, member, nttl, epid, pushed, k = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5])
  a = a + 6
  out[i] = 0
  -- The mark and the outcome in one SADD: 2 members added means this
  -- call finished it. A reminder finished before had the mark (an
  -- outcome member is never written without it): 1 added is this call's
  -- outcome, taken back; 0 added is the same outcome finished before in
  -- the same millisecond, which stays.
  local added = redis.call('SADD', sent, '!done', member .. ms)
  if added == 1 then
    redis.call('SREM', sent, member .. ms)
  elseif added == 2 then
    redis.call('EXPIRE', sent, ttl)
    if nttl > 0 then
      redis.call('SADD', nxt, '!q')
      redis.call('EXPIRE', nxt, nttl, 'NX')
    end
    if pushed ~= '' then
      local st = redis.call('HMGET', ep, 'id', 'rs')
      if st[1] == epid then
        local stage, platform = string.match(pushed, '^(%d+)|(.*)$')
        local rec = stage .. '|' .. ms .. '|' .. platform
        if st[2] then rec = st[2] .. ',' .. rec end
        redis.call('HSET', ep, 'rs', rec)
      end
    end
    for j = a, a + 2 * k - 1, 2 do
      count(ARGV[j], tonumber(ARGV[j + 1]))
    end
    out[i] = 1
  end
  a = a + 2 * k
end
`+countedTail+`return out`)

// finishAll marks each of fs finished with its outcome and counts it, with
// its extra counts, in one step per shard: it returns the ones this call
// finished (the others were finished before, and nothing of them was
// counted).
func finishAll(ctx context.Context, rdb redis.UniversalClient, cfg Config, fs []finishing) ([]finishing, error) {
	now := cfg.Now()
	minute := keys.Minute(now)
	ks := cfg.Keyspace
	var done []finishing
	for shard, group := range byShard(fs, func(f finishing) int { return f.r.Shard }) {
		keys, args := counterArgs(ks, shard, minute)
		for _, f := range group {
			ttl := f.ttl
			if ttl <= 0 {
				ttl = cfg.SentTTL
			}
			sent := ks.Sent(shard, f.r.ID())
			next, nextTTL := sent, int64(0)
			if f.next != nil {
				next, nextTTL = ks.Sent(shard, f.next.ID()), seconds(f.nextTTL)
			}
			keys = append(keys, sent, next, ks.Episode(shard, f.r.User, f.r.Conversation))
			args = append(args, seconds(ttl), Outcome{Metric: f.metric, Reason: f.reason}.memberPrefix(), nextTTL, f.r.Episode, f.pushed,
				1+len(f.extra), counters.Field(counters.Dims{Metric: f.metric, App: appOr(f.r.App), Reason: f.reason}), 1)
			for d, n := range f.extra {
				args = append(args, counters.Field(d), n)
			}
		}
		res, err := finishScript.Run(ctx, rdb, keys, args...).Int64Slice()
		if err != nil {
			return done, fmt.Errorf("finish reminders: %w", err)
		}
		done = append(done, accepted(group, res)...)
	}
	return done, nil
}

// deferredPrefix starts the member "!d<n>" of a reminder's sent set: its
// n-th deferral (Reminder.Defers after it) was counted.
const deferredPrefix = "!d"

// deferScript counts deferrals of one shard's reminders, each once: a
// deferral is counted only by the call that adds its member "!d<n>" to
// the reminder's sent set, so a task run again after its follow-ups were
// enqueued counts none twice. The sent set lives at least until an hour
// past the follow-up's due time, as a scheduled one does ("!q").
//
// KEYS[1] counters hash, KEYS[2] counter index, then each deferral's sent
// set. ARGV[1] minute, ARGV[2] counters TTL (s), then for each deferral:
// its member, the sent set's TTL (s), its counter field. Returns for each
// deferral 1 if this call counted it, else 0.
var deferScript = datastore.NewScript("worker", `#!lua`+countedHead+`
local out = {}
for i = 3, #KEYS do
  local k, a = KEYS[i], 3 + (i - 3) * 3
  out[i - 2] = 0
  if redis.call('SADD', k, ARGV[a]) == 1 then
    count(ARGV[a + 2], 1)
    out[i - 2] = 1
  end
  local ttl = tonumber(ARGV[a + 1])
  if redis.call('TTL', k) < ttl then
    redis.call('EXPIRE', k, ttl)
  end
end
`+countedTail+`return out`)

// countDeferrals counts ds, each once (deferScript), in one step per
// shard, and returns those this call counted.
func countDeferrals(ctx context.Context, rdb redis.UniversalClient, cfg Config, ds []deferral) ([]deferral, error) {
	var counted []deferral
	now := cfg.Now()
	minute := keys.Minute(now)
	for shard, group := range byShard(ds, func(d deferral) int { return d.r.Shard }) {
		keys, args := counterArgs(cfg.Keyspace, shard, minute)
		for _, d := range group {
			keys = append(keys, cfg.Keyspace.Sent(shard, d.r.ID()))
			args = append(args, deferredPrefix+strconv.Itoa(d.r.Defers+1), seconds(d.until.Sub(now)+time.Hour),
				counters.Field(counters.Dims{Metric: counters.RemindersDefer, App: appOr(d.r.App), Reason: d.reason}))
		}
		res, err := deferScript.Run(ctx, rdb, keys, args...).Int64Slice()
		if err != nil {
			return counted, fmt.Errorf("count deferrals: %w", err)
		}
		counted = append(counted, accepted(group, res)...)
	}
	return counted, nil
}

// seconds is d in whole seconds, at least 1 (a Redis TTL).
func seconds(d time.Duration) int64 { return int64(max(d, time.Second) / time.Second) }

// byShard groups items by shard, keeping their order within each shard.
func byShard[T any](items []T, shard func(T) int) map[int][]T {
	out := map[int][]T{}
	for _, it := range items {
		s := shard(it)
		out[s] = append(out[s], it)
	}
	return out
}

// finishReminder marks r finished with its outcome (metric, reason) and
// counts it, with extra counts, in one step of the reminder's shard: it
// reports whether this call finished it (false: it was finished before,
// and nothing was counted). The record lives ttl (0: SentTTL).
func finishReminder(ctx context.Context, rdb redis.UniversalClient, cfg Config, r Reminder, metric, reason string, extra map[counters.Dims]int64, ttl time.Duration) (bool, error) {
	done, err := finishAll(ctx, rdb, cfg, []finishing{{r: r, metric: metric, reason: reason, extra: extra, ttl: ttl}})
	return len(done) == 1, err
}

// accepted returns the items of group whose reply in res, one per item in
// order, is 1: those a script made the change for.
func accepted[T any](group []T, res []int64) []T {
	var out []T
	for i, x := range group {
		if i < len(res) && res[i] == 1 {
			out = append(out, x)
		}
	}
	return out
}
