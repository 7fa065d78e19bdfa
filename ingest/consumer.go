package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/telemetry"
	"github.com/nudgehq/nudge/keys"
)

// ErrLeaseLost is returned when a consumer no longer holds a shard's lease:
// another consumer owns the shard now, and this one must stop applying it.
var ErrLeaseLost = errors.New("ingest: shard lease lost")

// Stats are running totals of one Consumer, safe to read at any time.
type Stats struct {
	Read         atomic.Int64 // entries read (new and claimed)
	Claimed      atomic.Int64 // entries claimed from other or earlier consumers
	Applied      atomic.Int64 // events applied
	Duplicates   atomic.Int64 // events skipped as producer retries
	AlreadyAcked atomic.Int64 // entries another consumer had applied
	DeadLettered atomic.Int64 // entries sent to the dead-letter stream
	Batches      atomic.Int64 // batches applied
	Errors       atomic.Int64 // failed attempts to apply a batch (retried)
	Trimmed      atomic.Int64 // processed entries trimmed from the streams
}

// Consumer is one member of the ingest consumer group. Create it with New
// and run it with Run.
type Consumer struct {
	cfg   Config
	rdb   redis.UniversalClient
	ks    keys.Keyspace
	log   *slog.Logger
	stats Stats
	met   *metrics
	ready atomic.Bool // the consumer group exists and this consumer joined

	mu     sync.Mutex
	owned  map[int]*shardRun // shards this consumer holds a lease on
	lost   map[int]int64     // entries trimmed before they were read, last seen, by shard
	behind map[int]bool      // shards logged as behind (logBehind)
}

type shardRun struct {
	stop context.CancelFunc
	done chan struct{}
	wake chan struct{} // the shard's outboxes have new entries
}

// New returns a Consumer of cfg.Group on rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Consumer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Consumer{
		cfg:    cfg,
		rdb:    rdb,
		ks:     cfg.Keyspace,
		log:    cfg.Logger.With("component", "ingest", "consumer", cfg.Consumer),
		met:    newMetrics(cfg.Metrics),
		owned:  map[int]*shardRun{},
		lost:   map[int]int64{},
		behind: map[int]bool{},
	}, nil
}

// Stats returns the consumer's running totals.
func (c *Consumer) Stats() *Stats { return &c.stats }

// Owned returns the shards this consumer holds now, for tests and health.
func (c *Consumer) Owned() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, 0, len(c.owned))
	for s := range c.owned {
		out = append(out, s)
	}
	return out
}

// Ready reports whether Run has set up the consumer group and joined the
// live members: a readiness check.
func (c *Consumer) Ready() bool { return c.ready.Load() }

// ReadyCheck is Ready as a readiness check of /readyz.
func (c *Consumer) ReadyCheck() telemetry.Check {
	return telemetry.Check{Name: "consumer group", Check: func(context.Context) error {
		if !c.Ready() {
			return errors.New("not joined yet")
		}
		return nil
	}}
}

// Setup creates the consumer group on every shard stream (and the streams),
// if missing. Run calls it; it is exported for tools and tests.
func (c *Consumer) Setup(ctx context.Context) error {
	for s := 0; s < c.ks.Shards; s++ {
		err := c.rdb.XGroupCreateMkStream(ctx, c.ks.Stream(s), c.cfg.Group, "0").Err()
		if err != nil && !datastore.HasCode(err, datastore.CodeBusyGroup) {
			return fmt.Errorf("create group %s on %s: %w", c.cfg.Group, c.ks.Stream(s), err)
		}
	}
	return nil
}

// Run consumes until ctx is done. It joins the group, takes its share of
// the shards and keeps the shares balanced as consumers come and go. On
// shutdown each shard loop finishes the batch in flight, the leases are
// released so other consumers take over at once, and Run returns nil.
func (c *Consumer) Run(ctx context.Context) error {
	if err := c.Setup(ctx); err != nil {
		return err
	}
	c.log.Info("ingest started", "group", c.cfg.Group, "shards", c.ks.Shards)
	tick := time.NewTicker(c.cfg.ClaimIdle / 3)
	defer tick.Stop()
	for {
		if err := c.rebalance(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("rebalance failed", "err", err)
		} else if err == nil {
			c.ready.Store(true)
		}
		select {
		case <-ctx.Done():
			c.ready.Store(false)
			c.stopAll()
			c.leave()
			c.log.Info("ingest stopped")
			return nil
		case <-tick.C:
		}
	}
}

// leases are ingest's shard lease operations (datastore.Lease): a shard's
// lease (keys.Keyspace.Lease) holds its owner's consumer name.
var leases = datastore.NewLease("ingest")

// rebalance heartbeats, renews the leases held, and takes or gives shards
// so every live consumer holds about the same number.
func (c *Consumer) rebalance(ctx context.Context) error {
	now := c.cfg.Now()
	ttl := c.cfg.ClaimIdle
	members := c.ks.Members()
	pipe := c.rdb.TxPipeline()
	pipe.ZAdd(ctx, members, redis.Z{Score: float64(now.UnixMilli()), Member: c.cfg.Consumer})
	pipe.ZRemRangeByScore(ctx, members, "-inf", strconv.FormatInt(now.Add(-ttl).UnixMilli(), 10))
	pipe.PExpire(ctx, members, 3*ttl)
	live := pipe.ZCard(ctx, members)
	_, hbErr := pipe.Exec(ctx)

	// Renew what we hold; forget what we lost. Renewing does not wait for
	// the heartbeat: Redis refuses the heartbeat's ZADD when its memory is
	// full, and takes the renewal's PEXPIRE.
	for _, s := range c.Owned() {
		ok, err := leases.Renew(ctx, c.rdb, c.ks.Lease(s), c.cfg.Consumer, ttl)
		if err != nil {
			return fmt.Errorf("renew lease %d: %w", s, err)
		}
		if !ok {
			c.log.Warn("lease lost", "shard", s)
			c.stopShard(s, false)
		}
	}
	if hbErr != nil {
		return fmt.Errorf("heartbeat: %w", hbErr)
	}
	c.dropGoneConsumers(ctx, members)

	n := int(live.Val())
	if n < 1 {
		n = 1
	}
	fair := (c.ks.Shards + n - 1) / n
	owned := c.Owned()
	if len(owned) > fair {
		for _, s := range owned[fair:] {
			c.log.Info("releasing shard for a peer", "shard", s, "live", n)
			c.stopShard(s, true)
		}
		return nil
	}
	// Take free shards, starting at a point of our own so peers that start
	// together do not all race for shard 0.
	start := c.ks.Shard(c.cfg.Consumer)
	for i := 0; i < c.ks.Shards && len(c.Owned()) < fair; i++ {
		s := (start + i) % c.ks.Shards
		if c.holds(s) {
			continue
		}
		// Our own lease from an earlier life (same stable name) counts.
		ok, err := leases.Acquire(ctx, c.rdb, c.ks.Lease(s), c.cfg.Consumer, ttl)
		if err != nil {
			return fmt.Errorf("acquire lease %d: %w", s, err)
		}
		if !ok {
			continue
		}
		c.startShard(ctx, s)
	}
	return nil
}

func (c *Consumer) holds(s int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.owned[s]
	return ok
}

func (c *Consumer) startShard(ctx context.Context, s int) {
	sctx, cancel := context.WithCancel(ctx)
	run := &shardRun{stop: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	c.mu.Lock()
	c.owned[s] = run
	c.met.owned.Set(float64(len(c.owned)))
	c.mu.Unlock()
	c.log.Info("shard acquired", "shard", s)
	go func() {
		defer close(run.done)
		rctx, stopRelays := context.WithCancel(sctx)
		relays := make(chan struct{})
		go func() {
			defer close(relays)
			var wg sync.WaitGroup
			wg.Go(func() { c.watchLag(rctx, s) })
			c.runRelays(rctx, s, run.wake)
			wg.Wait()
		}()
		err := c.runShard(sctx, s)
		stopRelays()
		<-relays
		if err != nil && !errors.Is(err, context.Canceled) {
			c.log.Warn("shard loop ended", "shard", s, "err", err)
		}
		c.mu.Lock()
		if c.owned[s] == run {
			delete(c.owned, s)
		}
		c.met.owned.Set(float64(len(c.owned)))
		c.mu.Unlock()
		c.met.forgetShard(s)
	}()
}

// stopShard stops a shard loop after its batch in flight, and releases the
// lease if asked.
func (c *Consumer) stopShard(s int, release bool) {
	c.mu.Lock()
	run := c.owned[s]
	delete(c.owned, s)
	c.met.owned.Set(float64(len(c.owned)))
	c.mu.Unlock()
	if run == nil {
		return
	}
	run.stop()
	<-run.done
	if release {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := leases.Release(ctx, c.rdb, c.ks.Lease(s), c.cfg.Consumer); err != nil {
			c.log.Warn("release lease", "shard", s, "err", err)
		}
	}
}

// stopAll stops every shard loop after its batch in flight, then gives
// back every lease this consumer holds, so peers take over at once.
func (c *Consumer) stopAll() {
	c.mu.Lock()
	runs := c.owned
	c.owned = map[int]*shardRun{}
	c.met.owned.Set(0)
	c.mu.Unlock()
	for _, run := range runs {
		run.stop()
	}
	for _, run := range runs {
		<-run.done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for s := 0; s < c.ks.Shards; s++ {
		if err := leases.Release(ctx, c.rdb, c.ks.Lease(s), c.cfg.Consumer); err != nil {
			c.log.Warn("release lease", "shard", s, "err", err)
		}
	}
}

// leave removes this consumer from the live members, so peers rebalance at
// once instead of after ClaimIdle.
func (c *Consumer) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.rdb.ZRem(ctx, c.ks.Members(), c.cfg.Consumer)
}
