package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/streamid"
)

// errOutOfOrder is returned when a batch is refused because an older entry
// of the shard is pending (see apply.lua): the shard loop goes back to
// claiming pending entries, in order.
var errOutOfOrder = errors.New("an older entry is pending")

// runShard applies one shard while this consumer holds its lease. It first
// works off the shard's pending entries (left by a dead owner, or by this
// consumer's previous life), in id order, then reads new entries. It goes
// back to the pending entries whenever a read finds nothing new or a batch
// is refused because an older entry is pending: a consumer that lost the
// shard may have read entries after this one took it over.
func (c *Consumer) runShard(ctx context.Context, s int) error {
	pendingFirst := true
	var lastTrim time.Time
	backoff := newBackoff()
	for ctx.Err() == nil {
		if c.cfg.Now().Sub(lastTrim) >= c.cfg.TrimInterval {
			if err := c.trim(ctx, s); err != nil && ctx.Err() == nil {
				c.log.Warn("trim failed", "shard", s, "err", err)
			}
			lastTrim = c.cfg.Now()
		}
		var (
			msgs       []redis.XMessage
			deliveries map[string]int64
			err        error
		)
		if pendingFirst {
			var done bool
			msgs, deliveries, done, err = c.claim(ctx, s)
			if err == nil && done {
				pendingFirst = false
				continue
			}
			if err == nil && len(msgs) == 0 {
				// Pending entries of a consumer that may still be alive:
				// wait until they have been idle for ClaimIdle.
				sleep(ctx, min(c.cfg.ClaimIdle/10, time.Second))
				continue
			}
		} else {
			msgs, err = c.read(ctx, s)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn("read failed", "shard", s, "err", err)
			sleep(ctx, backoff.next())
			continue
		}
		if len(msgs) == 0 {
			pendingFirst = true
			continue
		}
		if err := c.process(ctx, s, msgs, deliveries); err != nil {
			if errors.Is(err, errOutOfOrder) {
				c.log.Warn("older entries are pending; claiming them first", "shard", s, "err", err)
				pendingFirst = true
				continue
			}
			if errors.Is(err, ErrLeaseLost) {
				return err
			}
			// Shutting down mid-retry: the batch stays pending for the
			// next owner.
			return err
		}
		backoff.reset()
	}
	return ctx.Err()
}

// read returns new entries of the shard (XREADGROUP >): a batch of up to
// BatchSize, bounded (readScript), or, when there is none, the first entry
// to arrive within Block.
func (c *Consumer) read(ctx context.Context, s int) ([]redis.XMessage, error) {
	reply, err := readScript.Run(ctx, c.rdb, []string{c.ks.Stream(s)},
		maxEntryBytes, maxDeadPayload, c.cfg.Group, c.cfg.Consumer, c.cfg.BatchSize, maxReadBytes).Result()
	if err == nil {
		msgs, err := parseEntries(reply)
		if err != nil {
			return nil, err
		}
		if len(msgs) > 0 {
			c.stats.Read.Add(int64(len(msgs)))
			c.met.read.WithLabelValues(shardLabel(s)).Add(float64(len(msgs)))
			return msgs, nil
		}
	} else if !datastore.HasCode(err, datastore.CodeNoGroup) {
		return nil, fmt.Errorf("read: %w", err)
	}
	// Nothing new: wait for one entry.
	res, err := c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    c.cfg.Group,
		Consumer: c.cfg.Consumer,
		Streams:  []string{c.ks.Stream(s), ">"},
		Count:    1,
		Block:    c.cfg.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if datastore.HasCode(err, datastore.CodeNoGroup) {
			// The stream was deleted (FLUSHALL, say): create it again.
			if serr := c.Setup(ctx); serr != nil {
				return nil, serr
			}
		}
		return nil, fmt.Errorf("xreadgroup: %w", err)
	}
	if len(res) == 0 {
		return nil, nil
	}
	c.stats.Read.Add(int64(len(res[0].Messages)))
	c.met.read.WithLabelValues(shardLabel(s)).Add(float64(len(res[0].Messages)))
	return res[0].Messages, nil
}

// claim takes over the oldest pending entries of the shard, in id order:
// those of this consumer's name (an earlier life of it) at once, those of
// others once idle for ClaimIdle. It stops at the first entry it may not
// take yet, so entries are never applied out of order. done reports that
// nothing is pending. XAUTOCLAIM would skip an entry that is not idle yet
// and claim a later one, so the claim is XPENDING plus XCLAIM.
func (c *Consumer) claim(ctx context.Context, s int) (msgs []redis.XMessage, deliveries map[string]int64, done bool, err error) {
	stream := c.ks.Stream(s)
	pend, err := c.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: stream, Group: c.cfg.Group, Start: "-", End: "+", Count: int64(c.cfg.BatchSize),
	}).Result()
	if err != nil {
		return nil, nil, false, fmt.Errorf("xpending: %w", err)
	}
	if len(pend) == 0 {
		return nil, nil, true, nil
	}
	var ids []string
	deliveries = make(map[string]int64, len(pend))
	for _, p := range pend {
		if p.Consumer != c.cfg.Consumer && p.Idle < c.cfg.ClaimIdle {
			break
		}
		ids = append(ids, p.ID)
		deliveries[p.ID] = p.RetryCount + 1
	}
	if len(ids) == 0 {
		return nil, nil, false, nil
	}
	args := []any{maxEntryBytes, maxDeadPayload, c.cfg.Group, c.cfg.Consumer, maxReadBytes}
	for _, id := range ids {
		args = append(args, id)
	}
	reply, err := claimEntriesScript.Run(ctx, c.rdb, []string{stream}, args...).Result()
	if err == nil {
		msgs, err = parseEntries(reply)
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("xclaim: %w", err)
	}
	// Entries trimmed from the stream while pending come back empty: they
	// cannot be applied, and are acknowledged so they leave the pending list.
	kept := msgs[:0]
	var gone []string
	for _, m := range msgs {
		if m.Values == nil {
			gone = append(gone, m.ID)
			continue
		}
		kept = append(kept, m)
	}
	if len(gone) > 0 {
		c.log.Error("pending entries were trimmed before they were applied", "shard", s, "count", len(gone))
		c.rdb.XAck(ctx, stream, c.cfg.Group, gone...)
	}
	c.stats.Read.Add(int64(len(kept)))
	c.stats.Claimed.Add(int64(len(kept)))
	c.met.read.WithLabelValues(shardLabel(s)).Add(float64(len(kept)))
	if len(kept) > 0 {
		c.log.Info("claimed pending entries", "shard", s, "count", len(kept), "first", kept[0].ID)
	}
	return kept, deliveries, false, nil
}

// process applies a batch, retrying with backoff until it is applied, the
// lease is lost or ctx is done. A batch already being applied when ctx is
// cancelled is finished (with a deadline), so shutdown does not waste it.
//
// When Redis rejects the script itself (not a connection or availability
// problem: a key of the wrong type, say), retrying cannot help and would
// block the shard: the batch is split, and an entry that fails alone goes
// to the dead-letter stream (reason apply_failed).
func (c *Consumer) process(ctx context.Context, s int, msgs []redis.XMessage, deliveries map[string]int64) error {
	items := c.decode(s, msgs, deliveries)
	start := time.Now()
	defer func() { c.met.batchDuration.Observe(time.Since(start).Seconds()) }()
	backoff := newBackoff()
	for {
		err := c.attempt(ctx, s, items)
		if err == nil {
			return nil
		}
		if errors.Is(err, errOutOfOrder) {
			return err
		}
		c.stats.Errors.Add(1)
		c.met.applyErrors.Inc()
		if errors.Is(err, ErrLeaseLost) {
			c.log.Warn("lease lost while applying; the new owner takes the batch", "shard", s)
			return err
		}
		if rejected(err) {
			c.log.Error("Redis rejected a batch; applying its entries one by one", "shard", s, "entries", len(items), "err", err)
			return c.isolate(ctx, s, items)
		}
		c.log.Warn("apply failed; retrying", "shard", s, "entries", len(items), "err", err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sleep(ctx, backoff.next())
	}
}

func (c *Consumer) attempt(ctx context.Context, s int, items []item) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return c.applyItems(actx, s, items)
}

// isolate applies items one at a time; one that Redis rejects alone goes to
// the dead-letter stream.
func (c *Consumer) isolate(ctx context.Context, s int, items []item) error {
	for _, it := range items {
		one := []item{it}
		backoff := newBackoff()
		for {
			err := c.attempt(ctx, s, one)
			if err == nil {
				break
			}
			c.met.applyErrors.Inc()
			if errors.Is(err, ErrLeaseLost) || errors.Is(err, errOutOfOrder) {
				return err
			}
			if rejected(err) && it.ev != nil {
				it.ev, it.reason, it.detail = nil, ReasonApplyFailed, err.Error()
				it.payload = it.raw
				one = []item{it}
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn("apply failed; retrying", "shard", s, "entry", it.entry, "err", err)
			sleep(ctx, backoff.next())
		}
	}
	return nil
}

// rejected reports whether Redis refused the script for a reason that a
// retry will not fix: an error reply that is not a passing refusal.
func rejected(err error) bool { return datastore.Code(err) != "" && !datastore.Refused(err) }

// applyItems is one attempt at a batch: the atomic apply-and-ack. What
// the batch means for reminders and the registry is in the shard's
// outboxes, written by the same script; the relays take it from there,
// outside the batch's critical path.
func (c *Consumer) applyItems(ctx context.Context, s int, items []item) error {
	res, err := c.apply(ctx, s, items)
	if err != nil {
		return err
	}
	c.stats.Batches.Add(1)
	c.stats.Applied.Add(int64(res.Applied))
	c.stats.Duplicates.Add(int64(res.Duplicates))
	c.stats.AlreadyAcked.Add(int64(res.AlreadyAcked))
	c.stats.DeadLettered.Add(int64(res.Dead))
	c.met.applied.Add(float64(res.Applied))
	c.met.duplicates.Add(float64(res.Duplicates))
	if res.Dead > 0 {
		left := res.Dead // entries another consumer dead-lettered first are not counted
		for _, it := range items {
			if it.ev == nil {
				c.log.Warn("entry dead-lettered", "shard", s, "entry", it.entry, "reason", it.reason, "detail", it.detail)
				if left > 0 {
					c.met.dead.WithLabelValues(string(it.reason)).Inc()
					left--
				}
			}
		}
	}
	if res.Outbox > 0 || res.Registry > 0 {
		c.wake(s)
	}
	return nil
}

// trim deletes the shard's entries that every consumer group has
// processed: those before the oldest pending entry, or up to the last
// delivered one when nothing is pending.
func (c *Consumer) trim(ctx context.Context, s int) error {
	stream := c.ks.Stream(s)
	groups, err := c.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return fmt.Errorf("xinfo groups: %w", err)
	}
	var minID string
	for _, g := range groups {
		if g.Name == c.cfg.Group {
			if g.Lag >= 0 { // -1: Redis cannot tell (entries were deleted)
				c.met.lag.WithLabelValues(shardLabel(s)).Set(float64(g.Lag))
			}
			c.met.pending.WithLabelValues(shardLabel(s)).Set(float64(g.Pending))
		}
		cand := streamid.Of(g.LastDeliveredID).Next().String()
		if g.Pending > 0 {
			p, err := c.rdb.XPending(ctx, stream, g.Name).Result()
			if err != nil {
				return fmt.Errorf("xpending: %w", err)
			}
			cand = p.Lower
		}
		if minID == "" || streamid.Less(cand, minID) {
			minID = cand
		}
	}
	if minID == "" || minID == "0-1" {
		return nil
	}
	n, err := c.rdb.XTrimMinID(ctx, stream, minID).Result()
	if err != nil {
		return fmt.Errorf("xtrim: %w", err)
	}
	c.stats.Trimmed.Add(n)
	return nil
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	switch {
	case b.d == 0:
		b.d = 50 * time.Millisecond
	case b.d < 5*time.Second:
		b.d *= 2
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
