package ingest

import (
	"context"
	"time"

	"github.com/nudgehq/nudge/internal/datastore"
)

// delConsumer removes a consumer from the group if it has no pending
// entries, in one step: XGROUP DELCONSUMER drops a consumer's pending
// entries with it, and they would never be delivered again.
//
// KEYS[1] stream; ARGV[1] group, ARGV[2] consumer. Returns 0 when removed,
// -1 when the consumer has pending entries.
var delConsumer = datastore.NewScript("ingest", `
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return -1 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 0`)

// goneAfter is how long, in units of ClaimIdle, a consumer of the group
// that is not a live member must have been idle, with nothing pending,
// before it is removed from the group.
const goneAfter = 10

// dropGoneConsumers removes from each owned shard's consumer group the
// consumers that are gone: not a live member, nothing pending, idle for
// goneAfter × ClaimIdle. Consumer names change with every pod, so without
// this the group's list of consumers grows with every rollout. A consumer
// with pending entries stays until a live one has claimed them.
func (c *Consumer) dropGoneConsumers(ctx context.Context, members string) {
	live, err := c.rdb.ZRange(ctx, members, 0, -1).Result()
	if err != nil {
		return
	}
	isLive := make(map[string]bool, len(live))
	for _, m := range live {
		isLive[m] = true
	}
	idle := goneAfter * c.cfg.ClaimIdle
	for _, s := range c.Owned() {
		stream := c.ks.Stream(s)
		consumers, err := c.rdb.XInfoConsumers(ctx, stream, c.cfg.Group).Result()
		if err != nil {
			continue
		}
		for _, x := range consumers {
			if x.Name == c.cfg.Consumer || isLive[x.Name] || x.Pending > 0 || x.Idle < idle {
				continue
			}
			n, err := delConsumer.Run(ctx, c.rdb, []string{stream}, c.cfg.Group, x.Name).Int()
			if err != nil {
				c.log.Warn("remove a gone consumer", "shard", s, "consumer", x.Name, "err", err)
				continue
			}
			if n < 0 {
				continue // it has pending entries again
			}
			c.log.Info("removed a gone consumer from the group", "shard", s, "consumer", x.Name, "idle", x.Idle.Round(time.Second))
		}
	}
}
