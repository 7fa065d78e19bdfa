package ingest

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/streamid"
)

// lagInterval is how often an owned shard's lag is read from its
// consumer group.
const lagInterval = 5 * time.Second

// watchLag exports the lag of shard s (nudge_ingest_lag, _pending,
// _lag_seconds) from the consumer group every lagInterval, on its own: a
// shard loop stuck retrying a batch, or slow behind an overload, does not
// freeze the metrics an alert watches.
func (c *Consumer) watchLag(ctx context.Context, s int) {
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	for {
		c.exportLag(ctx, s)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// exportLag reads the group's lag and pending count on shard s, and the age
// of the oldest entry not delivered yet (the next one after the group's
// last delivered id). A failed read leaves the gauges as they were (the
// Redis error is counted by the client's hook).
func (c *Consumer) exportLag(ctx context.Context, s int) {
	stream := c.ks.Stream(s)
	groups, err := c.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		return
	}
	for _, g := range groups {
		if g.Name != c.cfg.Group {
			continue
		}
		shard := shardLabel(s)
		lost := c.trimmedUnread(ctx, s, g)
		if g.Lag >= 0 { // -1: Redis cannot tell (entries were deleted)
			c.met.lag.WithLabelValues(shard).Set(float64(g.Lag - lost))
		}
		c.met.trimmed.WithLabelValues(shard).Set(float64(lost))
		c.met.pending.WithLabelValues(shard).Set(float64(g.Pending))
		age := 0.0
		if g.Lag != 0 {
			next, err := c.rdb.XRangeN(ctx, stream, "("+g.LastDeliveredID, "+", 1).Result()
			if err != nil {
				return
			}
			if len(next) == 1 {
				age = max(0, float64(c.cfg.Now().UnixMilli()-int64(streamid.Of(next[0].ID).Ms))/1000)
			}
		}
		c.met.lagSeconds.WithLabelValues(shard).Set(age)
		c.logBehind(s, age, g.Lag-lost)
	}
}

// behindAfter is the lag past which ingest logs that a shard is behind.
const behindAfter = 30 * time.Second

// logBehind logs once when shard s falls more than behindAfter behind, and
// once when it has caught up again: an overload is in the log, not only in
// the metrics.
func (c *Consumer) logBehind(s int, age float64, entries int64) {
	c.mu.Lock()
	was := c.behind[s]
	now := age > behindAfter.Seconds()
	c.behind[s] = now
	c.mu.Unlock()
	switch {
	case now && !was:
		c.log.Warn("shard behind: the oldest unread entry is old", "shard", s, "seconds", int64(age), "entries", entries)
	case was && !now:
		c.log.Info("shard caught up", "shard", s)
	}
}

// trimmedUnread returns how many entries of shard s were trimmed from the
// stream before the group read them (a producer's MAXLEN smaller than the
// backlog): the stream's first entry lies past the group's last delivered
// one, and the entries added but neither read nor still there are the
// lost ones. Redis still counts them in the group's lag. A growing figure
// is logged as an error.
func (c *Consumer) trimmedUnread(ctx context.Context, s int, g redis.XInfoGroup) int64 {
	if g.Lag <= 0 {
		return 0
	}
	info, err := c.rdb.XInfoStream(ctx, c.ks.Stream(s)).Result()
	if err != nil || info.RecordedFirstEntryID == "" || !streamid.Less(g.LastDeliveredID, info.RecordedFirstEntryID) {
		return 0
	}
	lost := max(0, info.EntriesAdded-g.EntriesRead-info.Length)
	c.mu.Lock()
	before := c.lost[s]
	c.lost[s] = lost
	c.mu.Unlock()
	if lost > before {
		c.log.Error("entries trimmed from the stream before ingest read them: lost", "shard", s, "lost", lost-before,
			"lost_in_all", lost, "first_entry", info.RecordedFirstEntryID, "last_delivered", g.LastDeliveredID)
	}
	return lost
}
