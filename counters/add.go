package counters

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/keys"
)

// SafetyTTL is how long a counters hash lives in Redis if no flusher ever
// moves it: a backstop against unbounded memory, far longer than any flush
// interval. A flusher that is down for longer loses those minutes.
const SafetyTTL = 7 * 24 * time.Hour

// Add increments counters of one shard in the minute bucket of now, in one
// MULTI/EXEC: the hash, its entry in the shard's counter index, and the
// hash's safety TTL. Ingest does the same inside its apply script.
func Add(ctx context.Context, rdb redis.UniversalClient, ks keys.Keyspace, shard int, now time.Time, incr map[Dims]int64) error {
	if len(incr) == 0 {
		return nil
	}
	minute := keys.Minute(now)
	key := ks.Counters(shard, minute)
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for d, n := range incr {
			p.HIncrBy(ctx, key, Field(d), n)
		}
		p.ZAddNX(ctx, ks.CounterIndex(shard), redis.Z{Score: float64(minute), Member: strconv.FormatInt(minute, 10)})
		p.Expire(ctx, key, SafetyTTL)
		p.Expire(ctx, ks.CounterIndex(shard), SafetyTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("add counters: %w", err)
	}
	return nil
}
