package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// measureIngest compares the ingest consumer with a raw consumer doing
// only XREADGROUP + XACK over the same entries, on the same Redis: one
// read loop per shard, batches of 256, the streams filled beforehand.
// Each side runs Rounds times on fresh streams; the medians are kept.
func measureIngest(ctx context.Context, cfg Config, rdb *redis.Client, res *Result) error {
	rounds := cfg.size(3, 1)
	for _, recipients := range []int{1, 10} {
		n := cfg.size(30_000, 10_000)
		if recipients == 10 {
			n /= 3
		}
		var raw, nudge, cpu, script, commands, rawCPU, rawCommands []float64
		for range rounds {
			before, err := readRedisCost(ctx, rdb)
			if err != nil {
				return err
			}
			r, err := IngestRaw(ctx, rdb, n, recipients)
			if err != nil {
				return err
			}
			mid, err := readRedisCost(ctx, rdb)
			if err != nil {
				return err
			}
			g, err := IngestNudge(ctx, rdb, n, recipients)
			if err != nil {
				return err
			}
			after, err := readRedisCost(ctx, rdb)
			if err != nil {
				return err
			}
			raw, nudge = append(raw, r), append(nudge, g)
			c, rc := after.perEvent(mid, int64(n)), mid.perEvent(before, int64(n))
			cpu, script, commands = append(cpu, c.cpuUs), append(script, c.scriptUs), append(commands, c.commands)
			rawCPU, rawCommands = append(rawCPU, rc.cpuUs), append(rawCommands, rc.commands)
		}
		cfg.Logger.Info("ingest", "recipients", recipients, "events/s", nudge, "raw events/s", raw,
			"redis cpu µs/event", cpu, "apply script µs/event", script, "redis commands/event", commands,
			"raw redis cpu µs/event", rawCPU, "raw redis commands/event", rawCommands)
		r, g := median(raw), median(nudge)
		if recipients == 1 {
			res.IngestEventsPerS, res.IngestRawEventsPerS, res.IngestRatio = round(g, 0), round(r, 0), ratio(g, r)
			res.IngestRedisUsPerEvent = round(median(cpu), 1)
			res.IngestScriptUsPerEvent = round(median(script), 1)
			res.IngestRawRedisUsPerEvent = round(median(rawCPU), 1)
			res.IngestRedisCommandsPerEvent = round(median(commands), 2)
			res.IngestRawRedisCommandsPerEvent = round(median(rawCommands), 2)
		} else {
			res.Group10EventsPerS, res.Group10RawEventsPerS, res.Group10Ratio = round(g, 0), round(r, 0), ratio(g, r)
		}
	}
	return nil
}

// redisCost is what Redis has spent since it started: the CPU time of
// its main thread (INFO cpu: every command, script, read and reply; what
// bounds a Redis master), and the time spent in scripts (INFO commandstats,
// eval and evalsha), in microseconds. The difference around a run is the
// Redis time the run cost, as long as nothing else uses the server
// meanwhile.
//
// Summing usec over every command of commandstats would count a script's
// commands twice: a script's usec includes the commands it calls, and
// each of those is also counted under its own name.
//
// commands is INFO stats' total_commands_processed: every command, those a
// script calls included (a script call and its commands count 1 + each).
// Unlike the CPU time it does not move with the machine's speed, so an
// A/B of two versions on a busy machine can compare it exactly (with
// batches of the same size).
type redisCost struct{ cpuUs, scriptUs, commands float64 }

// perEvent is what Redis spent between before and c, per event of n.
func (c redisCost) perEvent(before redisCost, n int64) redisCost {
	if n <= 0 {
		return redisCost{}
	}
	d := float64(n)
	return redisCost{cpuUs: (c.cpuUs - before.cpuUs) / d, scriptUs: (c.scriptUs - before.scriptUs) / d,
		commands: (c.commands - before.commands) / d}
}

func readRedisCost(ctx context.Context, rdb *redis.Client) (redisCost, error) {
	var c redisCost
	info, err := rdb.Info(ctx, "cpu", "commandstats", "stats").Result()
	if err != nil {
		return c, fmt.Errorf("info: %w", err)
	}
	found := 0
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		if name, v, ok := strings.Cut(line, ":"); ok && (name == "used_cpu_user_main_thread" || name == "used_cpu_sys_main_thread") {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return c, fmt.Errorf("info cpu: %q: %w", line, err)
			}
			c.cpuUs += x * 1e6
			found++
			continue
		}
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return c, fmt.Errorf("info stats: %q: %w", line, err)
			}
			c.commands = float64(n)
			found++
			continue
		}
		if !strings.HasPrefix(line, "cmdstat_eval:") && !strings.HasPrefix(line, "cmdstat_evalsha:") {
			continue
		}
		_, rest, _ := strings.Cut(line, "usec=")
		v, _, _ := strings.Cut(rest, ",")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("info commandstats: %q: %w", line, err)
		}
		c.scriptUs += float64(n)
	}
	if found != 3 {
		return c, errors.New("info: no used_cpu_user_main_thread, used_cpu_sys_main_thread and total_commands_processed (Redis 7 or newer reports them)")
	}
	return c, nil
}

// Events returns n message events, each with the given number of
// recipients, over 2,000 conversations and 5,000 users.
func Events(n, recipients int) []*event.Event {
	evs := make([]*event.Event, n)
	ts := time.Now().UnixMilli()
	for i := range evs {
		rcpt := make([]string, recipients)
		for r := range rcpt {
			rcpt[r] = "user-" + strconv.Itoa((i*7+r)%5000)
		}
		evs[i] = &event.Event{V: 1, Type: event.TypeMessage, ID: "b" + strconv.Itoa(i), TS: ts,
			Conversation: "conv-" + strconv.Itoa(i%2000), Message: "m" + strconv.Itoa(i), Sender: "sender-" + strconv.Itoa(i%300),
			Recipients: rcpt, Preview: "see you at the standup in five minutes"}
	}
	return evs
}

// fill publishes evs to fresh streams under a prefix of its own and
// returns the keyspace and a function deleting it all.
func fill(ctx context.Context, rdb *redis.Client, evs []*event.Event) (keys.Keyspace, func(), error) {
	prefix := newPrefix("ingest")
	ks := keys.New(prefix, 8)
	p := producer.New(rdb, producer.Config{Keyspace: ks, MaxLen: -1})
	done := func() {
		deletePrefix(context.Background(), rdb, prefix)
		// On a loaded machine a script the consumer timed out on (and
		// gave up at shutdown) may still be queued in Redis and run after
		// the consumer returned; its writes go with a second pass.
		time.Sleep(time.Second)
		deletePrefix(context.Background(), rdb, prefix)
	}
	for i := 0; i < len(evs); i += 1000 {
		if _, err := p.PublishBatch(ctx, evs[i:min(i+1000, len(evs))]); err != nil {
			done()
			return ks, nil, err
		}
	}
	return ks, done, nil
}

// IngestRaw returns the events/s of a consumer doing only XREADGROUP and
// XACK over n message events with the given number of recipients.
func IngestRaw(ctx context.Context, rdb *redis.Client, n, recipients int) (float64, error) {
	ks, done, err := fill(ctx, rdb, Events(n, recipients))
	if err != nil {
		return 0, err
	}
	defer done()
	for s := range ks.Shards {
		if err := rdb.XGroupCreate(ctx, ks.Stream(s), "raw", "0").Err(); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, ks.Shards)
	for s := range ks.Shards {
		wg.Go(func() {
			for {
				res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "raw", Consumer: "raw",
					Streams: []string{ks.Stream(s), ">"}, Count: 256, Block: -1}).Result()
				if errors.Is(err, redis.Nil) || err == nil && len(res[0].Messages) == 0 {
					return
				}
				if err != nil {
					errs[s] = err
					return
				}
				ids := make([]string, len(res[0].Messages))
				for i, m := range res[0].Messages {
					ids[i] = m.ID
				}
				if err := rdb.XAck(ctx, ks.Stream(s), "raw", ids...).Err(); err != nil {
					errs[s] = err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// IngestNudge returns the events/s of the ingest consumer (no reminder
// hooks) over n message events with the given number of recipients.
func IngestNudge(ctx context.Context, rdb *redis.Client, n, recipients int) (float64, error) {
	ks, done, err := fill(ctx, rdb, Events(n, recipients))
	if err != nil {
		return 0, err
	}
	defer done()
	c, err := ingest.New(rdb, ingest.Config{Keyspace: ks, Consumer: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return 0, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(runCtx) }()
	for c.Stats().Applied.Load() < int64(n) {
		select {
		case err := <-errc:
			return 0, fmt.Errorf("consumer stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	cancel()
	if err := <-errc; err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}
