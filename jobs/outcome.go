package jobs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/keys"
)

// Outcome is how a reminder finished: the counter metric and reason it was
// counted with, and when. The worker records it in the reminder's sent set
// (keys.Sent) as the member "!outcome:<metric>:<reason>:<unix ms>", in the
// same script step as the "!done" mark, so a finished reminder always has
// exactly one. It is evidence for checks (the chaos run) and for whoever
// asks why a reminder was or was not pushed.
type Outcome struct {
	// Metric is counters.RemindersSent, RemindersFailed, RemindersSuppr or
	// RemindersCancel.
	Metric string
	// Reason is a Reason* constant for a suppressed reminder, else "".
	Reason string
	// At is when the worker finished the reminder, to the millisecond.
	At time.Time
}

const outcomePrefix = "!outcome:"

func (o Outcome) member() string {
	return outcomePrefix + o.Metric + ":" + o.Reason + ":" + strconv.FormatInt(o.At.UnixMilli(), 10)
}

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

// doneMember marks a reminder's sent set once the reminder is finished.
const doneMember = "!done"

// finishScript marks a reminder finished, records its outcome beside the
// mark and counts it, once.
//
// KEYS[1] sent set, KEYS[2] counters hash, KEYS[3] counter index (one shard).
// ARGV[1] sent TTL (s), ARGV[2] minute, ARGV[3] counters TTL (s), ARGV[4]
// the outcome member, then field, increment pairs. Returns 1 if it
// finished the reminder now.
var finishScript = redis.NewScript(`#!lua
if redis.call('SADD', KEYS[1], '!done') == 0 then return 0 end
redis.call('SADD', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[1])
if #ARGV >= 6 then
  for i = 5, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return 1`)

// finishReminder marks r finished with its outcome (metric, reason) and
// counts it, with extra counts, in one step of the reminder's shard: it
// reports whether this call finished it (false: it was finished before,
// and nothing was counted). The record lives ttl (0: SentTTL).
func finishReminder(ctx context.Context, rdb redis.UniversalClient, cfg Config, r Reminder, metric, reason string, extra map[counters.Dims]int64, ttl time.Duration) (bool, error) {
	now := cfg.Now()
	minute := keys.Minute(now)
	ks := cfg.Keyspace
	if ttl <= 0 {
		ttl = cfg.SentTTL
	}
	args := []any{int64(max(ttl, time.Second) / time.Second), minute, int64(counters.SafetyTTL / time.Second),
		Outcome{Metric: metric, Reason: reason, At: now}.member(),
		counters.Field(counters.Dims{Metric: metric, App: appOr(r.App), Reason: reason}), 1}
	for d, n := range extra {
		args = append(args, counters.Field(d), n)
	}
	keys := []string{ks.Sent(r.Shard, r.ID()), ks.Counters(r.Shard, minute), ks.CounterIndex(r.Shard)}
	finished, err := finishScript.Run(ctx, rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("finish reminder: %w", err)
	}
	return finished == 1, nil
}
