package ingest

import (
	"context"
	"time"
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
		if g.Lag >= 0 { // -1: Redis cannot tell (entries were deleted)
			c.met.lag.WithLabelValues(shard).Set(float64(g.Lag))
		}
		c.met.pending.WithLabelValues(shard).Set(float64(g.Pending))
		age := 0.0
		if g.Lag != 0 {
			next, err := c.rdb.XRangeN(ctx, stream, "("+g.LastDeliveredID, "+", 1).Result()
			if err != nil {
				return
			}
			if len(next) == 1 {
				ms, _ := parseID(next[0].ID)
				age = max(0, float64(c.cfg.Now().UnixMilli()-int64(ms))/1000)
			}
		}
		c.met.lagSeconds.WithLabelValues(shard).Set(age)
	}
}
