package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/loadgen"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// LatencyRate is the load-generator traffic under which the publish →
// counter latency is measured, in events per second.
const LatencyRate = 10_000

// probeTimeout is the longest a probe waits for its counter; a probe that
// times out counts with this latency.
const probeTimeout = 5 * time.Second

// measureLatency runs load-generator traffic of direct chats (messages
// to one recipient, reads, presence, device changes) at LatencyRate
// events/s for the given time through the pipeline's ingest binary, and
// probes it: a
// probe publishes one message of an app of its own and polls its
// messages_sent counter until it shows. Then the same traffic and probes
// through a bare consumer (XREADGROUP, three HINCRBY per entry, XACK) on
// streams of its own. Probes start once the traffic's setup burst
// (device registrations) has drained.
//
// Around the probes it also takes the CPU of Redis's main thread per
// event published meanwhile: what Redis spends per event at this rate,
// the pipeline's other processes and the probes included, where batches
// hold a few events each instead of the ingest run's 256.
func measureLatency(ctx context.Context, p *pipeline, traffic time.Duration, res *Result) error {
	lat, cost, err := probeUnder(ctx, p.rdb, p.ks, traffic, p.alive)
	if err != nil {
		return err
	}
	res.LatencyRate = LatencyRate
	res.LatencyP50Ms, res.LatencyP99Ms = percentile(lat, 50), percentile(lat, 99)
	res.LatencyRedisUsPerEvent = round(cost.cpuUs, 1)
	res.LatencyRedisCommandsPerEvent = round(cost.commands, 2)

	raw, rawCost, err := bareLatency(ctx, p.rdb, traffic)
	if err != nil {
		return err
	}
	res.LatencyRawP50Ms, res.LatencyRawP99Ms = percentile(raw, 50), percentile(raw, 99)
	res.LatencyRawRedisUsPerEvent = round(rawCost.cpuUs, 1)
	res.LatencyRawRedisCommandsPerEvent = round(rawCost.commands, 2)
	p.logger("latency", "probes", len(lat), "p50", res.LatencyP50Ms, "p99", res.LatencyP99Ms,
		"redis cpu µs/event", res.LatencyRedisUsPerEvent, "redis commands/event", res.LatencyRedisCommandsPerEvent,
		"raw probes", len(raw), "raw p50", res.LatencyRawP50Ms, "raw p99", res.LatencyRawP99Ms,
		"raw redis cpu µs/event", res.LatencyRawRedisUsPerEvent, "raw redis commands/event", res.LatencyRawRedisCommandsPerEvent)
	return nil
}

// bareLatency probes the traffic through bare consumers, one a shard, on
// streams of their own: the floor of the latency and of Redis's CPU per
// event at this rate.
func bareLatency(ctx context.Context, rdb *redis.Client, traffic time.Duration) ([]time.Duration, redisCost, error) {
	ks := keys.New(newPrefix("rawlat"), keys.DefaultShards)
	defer deletePrefix(context.Background(), rdb, ks.Prefix)
	for s := range ks.Shards {
		if err := rdb.XGroupCreateMkStream(ctx, ks.Stream(s), "bare", "$").Err(); err != nil {
			return nil, redisCost{}, err
		}
	}
	bareCtx, stop := context.WithCancel(ctx)
	bareErr := make(chan error, 1)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	for s := range ks.Shards {
		wg.Go(func() {
			if err := bareConsumer(bareCtx, rdb, ks, s); err != nil && !errors.Is(err, context.Canceled) {
				select {
				case bareErr <- err:
				default:
				}
			}
		})
	}
	lat, cost, err := probeUnder(ctx, rdb, ks, traffic, func() error {
		select {
		case err := <-bareErr:
			return err
		default:
			return nil
		}
	})
	if err != nil {
		return nil, cost, fmt.Errorf("bare consumer: %w", err)
	}
	return lat, cost, nil
}

// Latency is what a latency probe run measured.
type Latency struct {
	P50Ms, P99Ms    float64
	RedisUsPerEvent float64 // CPU of Redis's main thread per traffic event
	// RedisCommandsPerEvent is Redis's commands per traffic event, those
	// of scripts included (INFO stats total_commands_processed).
	RedisCommandsPerEvent float64
	Probes                int
}

func latencyOf(lat []time.Duration, cost redisCost) Latency {
	return Latency{P50Ms: percentile(lat, 50), P99Ms: percentile(lat, 99), RedisUsPerEvent: round(cost.cpuUs, 1),
		RedisCommandsPerEvent: round(cost.commands, 2), Probes: len(lat)}
}

// LatencyInProcess is the bench's latency step without binaries, for A/B
// runs of ingest's code (ingest: BenchmarkPublishToCounter): the same
// traffic and probes through an in-process ingest consumer with the
// ingest binary's default settings and its reminder scheduler (on an
// asynq queue of its own), then through the bare consumers.
func LatencyInProcess(ctx context.Context, rdb *redis.Client, traffic time.Duration) (nudge, bare Latency, err error) {
	ks := keys.New(newPrefix("lat"), keys.DefaultShards)
	queue := ks.Prefix + "-reminders"
	defer func() {
		deletePrefix(context.Background(), rdb, ks.Prefix)
		deleteQueue(context.Background(), rdb, queue)
	}()
	opt := asynq.RedisClientOpt{Addr: rdb.Options().Addr, DB: rdb.Options().DB}
	client := asynq.NewClient(opt)
	defer client.Close()
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sched, err := jobs.NewScheduler(client, insp, rdb, nil, jobs.Config{Keyspace: ks, Queue: queue, Logger: logger})
	if err != nil {
		return nudge, bare, err
	}
	c, err := ingest.New(rdb, ingest.Config{Keyspace: ks, Consumer: "bench", Hooks: sched, Logger: logger})
	if err != nil {
		return nudge, bare, err
	}
	runCtx, stop := context.WithCancel(ctx)
	var runErr error
	done := make(chan struct{})
	go func() {
		runErr = c.Run(runCtx)
		close(done)
	}()
	lat, cost, err := probeUnder(ctx, rdb, ks, traffic, func() error {
		select {
		case <-done:
			return fmt.Errorf("consumer stopped: %v", runErr)
		default:
			return nil
		}
	})
	stop()
	<-done
	if err == nil && runErr != nil {
		err = runErr
	}
	if err != nil {
		return nudge, bare, err
	}
	raw, rawCost, err := bareLatency(ctx, rdb, traffic)
	if err != nil {
		return nudge, bare, err
	}
	return latencyOf(lat, cost), latencyOf(raw, rawCost), nil
}

// probeUnder runs the traffic on ks and returns the probes' latencies,
// sorted, and what Redis spent per traffic event while they ran (its
// main thread's CPU, its commands). alive reports a consumer that stopped.
func probeUnder(ctx context.Context, rdb *redis.Client, ks keys.Keyspace, traffic time.Duration, alive func() error) ([]time.Duration, redisCost, error) {
	gen, err := loadgen.New(rdb, loadgen.Config{Seed: 1, IDPrefix: "lat" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10),
		Users: 5000, DeviceFraction: 0.1, GroupFraction: -1, Rate: LatencyRate, Keyspace: ks})
	if err != nil {
		return nil, redisCost{}, err
	}
	genCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	genErr := make(chan error, 1)
	go func() {
		_, err := gen.Run(genCtx)
		genErr <- err
	}()
	// Warm up: the setup published and consumed, then one more second.
	warmUp := time.Now().Add(time.Minute)
	for {
		st := gen.Stats()
		if st.Events > st.Setup && st.Setup > 0 {
			caughtUp, err := lagBelow(ctx, rdb, ks, LatencyRate/10)
			if err != nil {
				return nil, redisCost{}, err
			}
			if caughtUp {
				break
			}
		}
		if err := alive(); err != nil {
			return nil, redisCost{}, err
		}
		if time.Now().After(warmUp) {
			return nil, redisCost{}, fmt.Errorf("the consumer did not catch up with %d events/s within a minute", LatencyRate)
		}
		select {
		case err := <-genErr:
			return nil, redisCost{}, fmt.Errorf("traffic: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	time.Sleep(time.Second)
	before, err := readRedisCost(ctx, rdb)
	if err != nil {
		return nil, redisCost{}, err
	}
	published := gen.Stats().Events
	end := time.Now().Add(traffic)

	pub := producer.New(rdb, producer.Config{Keyspace: ks})
	var lat []time.Duration
	for i := 0; time.Now().Before(end); i++ {
		select {
		case err := <-genErr:
			return nil, redisCost{}, fmt.Errorf("traffic: %w", err)
		default:
		}
		app := "probe-" + strconv.Itoa(i)
		e := &event.Event{V: 1, Type: event.TypeMessage, ID: app, TS: time.Now().UnixMilli(), App: app,
			Conversation: "probe-c" + strconv.Itoa(i%16), Message: app, Sender: "probe-s", Recipients: []string{"probe-u"}}
		field := counters.Field(counters.Dims{Metric: counters.MessagesSent, App: app})
		shard := ks.Shard(e.Conversation)
		start := time.Now()
		if _, err := pub.Publish(ctx, e); err != nil {
			return nil, redisCost{}, err
		}
		for {
			now := time.Now()
			m := keys.Minute(now)
			pipe := rdb.Pipeline()
			a := pipe.HExists(ctx, ks.Counters(shard, m), field)
			b := pipe.HExists(ctx, ks.Counters(shard, m-1), field)
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, redisCost{}, err
			}
			if a.Val() || b.Val() {
				lat = append(lat, time.Since(start))
				break
			}
			if now.Sub(start) > probeTimeout {
				lat = append(lat, probeTimeout)
				if err := alive(); err != nil {
					return nil, redisCost{}, err
				}
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(10 * time.Millisecond)
	}
	after, err := readRedisCost(ctx, rdb)
	if err != nil {
		return nil, redisCost{}, err
	}
	published = gen.Stats().Events - published
	cancel()
	if err := <-genErr; err != nil && !errors.Is(err, context.Canceled) {
		return nil, redisCost{}, fmt.Errorf("traffic: %w", err)
	}
	return sortedCopy(lat), after.perEvent(before, published), nil
}

// lagBelow reports whether every shard's consumer group has fewer than n
// entries left to read.
func lagBelow(ctx context.Context, rdb *redis.Client, ks keys.Keyspace, n int64) (bool, error) {
	for s := range ks.Shards {
		groups, err := rdb.XInfoGroups(ctx, ks.Stream(s)).Result()
		if err != nil {
			if datastore.NoSuchKey(err) {
				return false, nil
			}
			return false, err
		}
		if len(groups) == 0 {
			return false, nil
		}
		for _, g := range groups {
			if g.Lag >= n || g.Pending >= n {
				return false, nil
			}
		}
	}
	return true, nil
}

// bareConsumer is the floor of the latency: it reads a shard with
// XREADGROUP, adds three counters per entry (events_applied, the event
// type's counter, and a per-app one) with HINCRBY, and acknowledges, in
// one pipeline per batch.
func bareConsumer(ctx context.Context, rdb *redis.Client, ks keys.Keyspace, shard int) error {
	for {
		res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "bare", Consumer: "bare",
			Streams: []string{ks.Stream(shard), ">"}, Count: 256, Block: 100 * time.Millisecond}).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return err
		}
		key := ks.Counters(shard, keys.Minute(time.Now()))
		pipe := rdb.Pipeline()
		ids := make([]string, 0, len(res[0].Messages))
		for _, m := range res[0].Messages {
			var e struct {
				Type string `json:"type"`
				App  string `json:"app"`
			}
			payload, _ := m.Values["event"].(string)
			_ = json.Unmarshal([]byte(payload), &e)
			pipe.HIncrBy(ctx, key, counters.EventsApplied+"|"+e.App+"||", 1)
			pipe.HIncrBy(ctx, key, e.Type+"|"+e.App+"||", 1)
			pipe.HIncrBy(ctx, key, counters.Field(counters.Dims{Metric: counters.MessagesSent, App: e.App}), 1)
			ids = append(ids, m.ID)
		}
		pipe.XAck(ctx, ks.Stream(shard), "bare", ids...)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
}
