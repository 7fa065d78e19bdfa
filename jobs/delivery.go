package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

// A reminder is pushed in three steps, so that no device gets it twice:
//
//  1. claim: one script per shard marks the reminder claimed (a read no
//     longer cancels it) and records an intent for each device about to be
//     pushed. A device with an intent, an outcome, or a digest (it got the
//     reminder) is not pushed again, by this run or any later one. When
//     Redis refuses the write (memory full, away), nothing is pushed.
//  2. push: every claimed device, sends bounded by PushConcurrency.
//  3. record: one script per shard replaces each intent by the device's
//     outcome and counts it, once. A device to try again loses its intent
//     (SREM, which Redis takes even when memory is full). A record Redis
//     refuses leaves the intent: the device is never pushed again for this
//     reminder, and its push is not counted.

// sending is one reminder being pushed: its message, its devices, and what
// became of each.
type sending struct {
	r       Reminder
	items   []digestItem // the reminder, then those it takes into its digest
	devices []registry.Device
	targets []target // how each device is pushed, by index of devices
	already bool     // a device got it on an earlier try

	finished    bool         // claim found it finished: nothing to do
	outstanding bool         // a device was pushed before with no outcome recorded
	push        []*pushGroup // the devices claimed, by target

	mu      sync.Mutex
	results []deviceResult
}

// pushGroup is the devices of one reminder pushed alike: one send.
type pushGroup struct {
	target
	tokens []string
}

type deviceResult struct {
	platform string
	push.Result
}

// claimScript claims reminders of one shard and the devices to push.
//
// KEYS: sent sets. ARGV[1] sent TTL (s), then for each sent set the number
// m of devices and m device digests. Returns for each sent set {0} if the
// reminder is finished, else {1, outstanding, digests to push...}, where
// outstanding counts devices left out because an earlier push of theirs
// has no outcome recorded (an intent or an unknown outcome).
//
// One SMISMEMBER asks a sent set everything at once: "!done", then for
// each device whether it got the reminder, was refused, has an unknown
// outcome or an intent. One SADD then adds the claim and the intents.
var claimScript = datastore.NewScript("worker", `#!lua
local out, a = {}, 2
for i = 1, #KEYS do
  local k, m = KEYS[i], tonumber(ARGV[a])
  local ask = {'!done'}
  for j = 1, m do
    local d, b = ARGV[a + j], 4 * j - 2
    ask[b], ask[b + 1], ask[b + 2], ask[b + 3] = d, '!f:' .. d, '!u:' .. d, '!i:' .. d
  end
  local has = redis.call('SMISMEMBER', k, unpack(ask))
  local r = {0}
  if has[1] == 0 then
    r = {1, 0}
    local add, claimed = {'!c'}, {}
    for j = 1, m do
      local d, b = ARGV[a + j], 4 * j - 2 -- has[b]: d got it; then refused, unknown, intent
      if has[b] == 0 and has[b + 1] == 0 then
        if has[b + 2] == 1 or has[b + 3] == 1 or claimed[d] then
          r[2] = r[2] + 1
        else
          claimed[d] = true
          r[#r + 1] = d
          add[#add + 1] = '!i:' .. d
        end
      end
    end
    redis.call('SADD', k, unpack(add))
    redis.call('EXPIRE', k, ARGV[1])
  end
  out[i] = r
  a = a + m + 1
end
return out`)

func (w *Worker) claim(ctx context.Context, ss []*sending) error {
	for _, group := range byShard(ss, func(s *sending) int { return s.r.Shard }) {
		keys := make([]string, len(group))
		args := []any{seconds(w.cfg.SentTTL)}
		for i, s := range group {
			keys[i] = w.sentKey(s.r)
			args = append(args, len(s.devices))
			for _, d := range s.devices {
				args = append(args, tokenDigest(d.Platform, d.Token))
			}
		}
		res, err := claimScript.Run(ctx, w.rdb, keys, args...).Slice()
		if err != nil {
			return fmt.Errorf("claim reminders: %w", err)
		}
		for i, s := range group {
			row, _ := res[i].([]any)
			if len(row) < 2 {
				s.finished = true
				continue
			}
			n, _ := row[1].(int64)
			s.outstanding = n > 0
			claimed := map[string]bool{}
			for _, d := range row[2:] {
				if d, ok := d.(string); ok {
					claimed[d] = true
				}
			}
			s.push = nil
			byKey := map[string]*pushGroup{}
			for j, d := range s.devices {
				if !claimed[tokenDigest(d.Platform, d.Token)] {
					continue
				}
				t := s.targets[j]
				g := byKey[t.key]
				if g == nil {
					g = &pushGroup{target: t}
					byKey[t.key] = g
					s.push = append(s.push, g)
				}
				g.tokens = append(g.tokens, d.Token)
			}
		}
	}
	return nil
}

// pushAll sends every claimed device of ss, at most PushConcurrency sends
// at once across the worker.
func (w *Worker) pushAll(ctx context.Context, ss []*sending) {
	var wg sync.WaitGroup
	for _, s := range ss {
		for _, g := range s.push {
			if g.sender == nil {
				for _, t := range g.tokens {
					s.results = append(s.results, deviceResult{g.platform, push.Result{Token: t, Outcome: push.Failed, Reason: g.reason}})
					w.met.push.WithLabelValues(g.platform, push.Failed.String(), g.reason).Inc()
				}
				continue
			}
			wg.Go(func() {
				results := w.send(ctx, g.sender, g.msg, g.tokens)
				s.mu.Lock()
				for _, res := range results {
					s.results = append(s.results, deviceResult{g.platform, res})
				}
				s.mu.Unlock()
			})
		}
	}
	wg.Wait()
}

// send pushes msg to tokens of one platform when a push slot is free. It
// returns one result per token: a call that failed as a whole makes each
// token one to try again.
func (w *Worker) send(ctx context.Context, sender push.Sender, msg push.Message, tokens []string) []push.Result {
	var results []push.Result
	var err error
	select {
	case w.pushSlots <- struct{}{}:
		start := time.Now()
		results, err = sender.Send(ctx, msg, tokens)
		<-w.pushSlots
		w.met.pushDuration.WithLabelValues(sender.Platform()).Observe(time.Since(start).Seconds())
	case <-ctx.Done():
		err = ctx.Err()
	}
	if len(results) != len(tokens) {
		results = make([]push.Result, len(tokens))
		for i, t := range tokens {
			results[i] = push.Result{Token: t, Outcome: push.Retry, Reason: "error", Err: err}
		}
	}
	for _, res := range results {
		w.met.push.WithLabelValues(sender.Platform(), res.Outcome.String(), res.Reason).Inc()
	}
	return results
}

// recordScript records the outcome of pushes to devices of one shard's
// reminders, and counts each outcome once.
//
// KEYS[1] counters hash, KEYS[2] counter index, KEYS[3..] sent sets.
// ARGV[1] minute, ARGV[2] counters TTL (s), ARGV[3] sent TTL (s), then for
// each sent set the number m of devices and m triples: device digest,
// outcome member, counter field.
//
// A sent set whose intents were all still there has the TTL the claim gave
// it (the claim adds intents and sets the TTL in one script, and every
// script that makes a sent set gives it one): only one that lost an
// intent (deleted or expired since, then made again by this SADD) gets
// its TTL here.
var recordScript = datastore.NewScript("worker", `#!lua`+countedHead+`
local a = 4
for i = 3, #KEYS do
  local k, m = KEYS[i], tonumber(ARGV[a])
  local kept = true
  a = a + 1
  for j = a, a + 3 * m - 1, 3 do
    if redis.call('SREM', k, '!i:' .. ARGV[j]) == 0 then kept = false end
    if redis.call('SADD', k, ARGV[j + 1]) == 1 then
      count(ARGV[j + 2], 1)
    end
  end
  if m > 0 and not kept then redis.call('EXPIRE', k, ARGV[3]) end
  a = a + 3 * m
end
`+countedTail+`return 1`)

// recordWait bounds how long record keeps trying: less than asynq's 30 s
// task lease, which is not extended while Redis is away.
const recordWait = 20 * time.Second

// record writes the outcome of every push of ss (recordScript), and gives
// up the intents of devices to try again, trying until Redis answers, for
// up to recordWait.
func (w *Worker) record(ctx context.Context, ss []*sending) error {
	minute := keys.Minute(w.cfg.Now())
	ks := w.cfg.Keyspace
	type call struct {
		keys []string
		args []any
	}
	var calls []call
	retryPipe := w.rdb.Pipeline()
	for shard, group := range byShard(ss, func(s *sending) int { return s.r.Shard }) {
		var c call
		c.keys, c.args = counterArgs(ks, shard, minute)
		c.args = append(c.args, seconds(w.cfg.SentTTL))
		for _, s := range group {
			var triples []any
			app := appOr(s.r.App)
			for _, res := range s.results {
				d := tokenDigest(res.platform, res.Token)
				var member string
				var dims counters.Dims
				switch res.Outcome {
				case push.Delivered:
					member, dims = d, counters.Dims{Metric: counters.PushSent, App: app, Platform: res.platform}
				case push.TokenInvalid:
					member, dims = failedPrefix+d, counters.Dims{Metric: counters.TokensRemoved, App: app, Platform: res.platform, Reason: res.Reason}
				case push.Retry:
					retryPipe.SRem(ctx, w.sentKey(s.r), intentPrefix+d)
					continue
				case push.Unknown:
					member, dims = unknownPrefix+d, counters.Dims{Metric: counters.PushUnknown, App: app, Platform: res.platform, Reason: res.Reason}
				default:
					member, dims = failedPrefix+d, counters.Dims{Metric: counters.PushFailed, App: app, Platform: res.platform, Reason: res.Reason}
				}
				triples = append(triples, d, member, counters.Field(dims))
			}
			if len(triples) > 0 {
				c.keys = append(c.keys, w.sentKey(s.r))
				c.args = append(c.args, len(triples)/3)
				c.args = append(c.args, triples...)
			}
		}
		if len(c.keys) > 2 {
			calls = append(calls, c)
		}
	}
	return retryRedis(ctx, w.log, "recording push outcomes", func() error {
		if retryPipe.Len() > 0 {
			if _, err := retryPipe.Exec(ctx); err != nil {
				return err
			}
		}
		for len(calls) > 0 {
			if err := recordScript.Run(ctx, w.rdb, calls[0].keys, calls[0].args...).Err(); err != nil {
				return err
			}
			calls = calls[1:]
		}
		return nil
	})
}

// retryRedis runs f until it succeeds, for up to recordWait: what it writes
// records pushes that went out.
func retryRedis(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	deadline := time.Now().Add(recordWait)
	wait := 50 * time.Millisecond
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		}
		log.Warn(what+" failed; trying again", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// tokenDigest names a device in a sent set without storing its token.
func tokenDigest(platform, token string) string {
	h := sha256.Sum256([]byte(platform + ":" + token))
	return hex.EncodeToString(h[:12])
}
