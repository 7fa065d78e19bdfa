package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
)

// Scheduling runs as ingest drives it: one loop per shard hands each
// batch's opened episodes to the scheduler, which enqueues them with
// scheduleWorkers goroutines. The raw side enqueues bare asynq tasks (a
// task id and a due time, nothing else) from the same loops with the same
// number of goroutines.
const (
	scheduleShards  = 8
	scheduleBatch   = 256
	scheduleWorkers = 16
)

// measureSchedule compares the reminder scheduler, when every event opens
// an episode, with bare asynq Enqueue; medians of the rounds.
func measureSchedule(ctx context.Context, cfg Config, rdb *redis.Client, res *Result) error {
	n := cfg.size(20_000, 5_000)
	var raw, nudge []float64
	for range cfg.size(3, 1) {
		r, err := ScheduleRaw(ctx, rdb, n)
		if err != nil {
			return err
		}
		g, err := ScheduleNudge(ctx, rdb, n)
		if err != nil {
			return err
		}
		raw, nudge = append(raw, r), append(nudge, g)
	}
	cfg.Logger.Info("schedule", "reminders/s", nudge, "raw enqueues/s", raw)
	r, g := median(raw), median(nudge)
	res.SchedulePerS, res.ScheduleRawPerS, res.ScheduleRatio = round(g, 0), round(r, 0), ratio(g, r)
	return nil
}

// episodes returns n opened episodes over scheduleShards shards, each of
// another user.
func episodes(n int) [][]ingest.Episode {
	byShard := make([][]ingest.Episode, scheduleShards)
	now := time.Now()
	for i := range n {
		s := i % scheduleShards
		byShard[s] = append(byShard[s], ingest.Episode{Shard: s, App: "bench", User: "u" + strconv.Itoa(i),
			Conversation: "c" + strconv.Itoa(i%997), ID: fmt.Sprintf("%d-%d", now.UnixMilli(), i), OpenedAt: now})
	}
	return byShard
}

// driveShards calls batch for every batch of every shard, one loop per
// shard, and returns the rate over all episodes.
func driveShards(n int, batch func([]ingest.Episode) error) (float64, error) {
	byShard := episodes(n)
	start := time.Now()
	var g errgroup.Group
	for _, eps := range byShard {
		g.Go(func() error {
			for i := 0; i < len(eps); i += scheduleBatch {
				if err := batch(eps[i:min(i+scheduleBatch, len(eps))]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// asynqClients returns an asynq client and inspector on rdb's server and a
// queue of their own, and a function that deletes the queue and closes
// them.
func asynqClients(rdb *redis.Client, what string) (*asynq.Client, *asynq.Inspector, string, func()) {
	opt := asynq.RedisClientOpt{Addr: rdb.Options().Addr, PoolSize: 64}
	client, insp := asynq.NewClient(opt), asynq.NewInspector(opt)
	queue := newPrefix(what)
	return client, insp, queue, func() {
		deleteQueue(context.Background(), rdb, queue)
		_ = client.Close()
		_ = insp.Close()
	}
}

// ScheduleRaw returns the tasks/s of bare asynq Enqueue (task id, queue,
// due time) of n tasks.
func ScheduleRaw(ctx context.Context, rdb *redis.Client, n int) (float64, error) {
	client, _, queue, done := asynqClients(rdb, "schedraw")
	defer done()
	due := time.Now().Add(time.Hour)
	return driveShards(n, func(eps []ingest.Episode) error {
		var g errgroup.Group
		g.SetLimit(scheduleWorkers)
		for _, ep := range eps {
			g.Go(func() error {
				_, err := client.EnqueueContext(ctx, asynq.NewTask("bench", []byte(ep.User+"|"+ep.Conversation+"|"+ep.ID)),
					asynq.TaskID(ep.User+"|"+ep.Conversation+"|"+ep.ID), asynq.Queue(queue), asynq.ProcessAt(due))
				return err
			})
		}
		return g.Wait()
	})
}

// ScheduleNudge returns the first reminders/s the scheduler enqueues for n
// opened episodes, counters included.
func ScheduleNudge(ctx context.Context, rdb *redis.Client, n int) (float64, error) {
	client, insp, queue, done := asynqClients(rdb, "sched")
	defer done()
	prefix := newPrefix("sched")
	defer deletePrefix(context.Background(), rdb, prefix)
	s, err := jobs.NewScheduler(client, insp, rdb, nil, jobs.Config{Keyspace: keys.New(prefix, scheduleShards),
		Queue: queue, Stages: []time.Duration{time.Hour}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return 0, err
	}
	var mu sync.Mutex
	var scheduled int
	rate, err := driveShards(n, func(eps []ingest.Episode) error {
		if _, err := s.EpisodesOpened(ctx, eps); err != nil {
			return err
		}
		mu.Lock()
		scheduled += len(eps)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return 0, err
	}
	// Reminders of a shard due in the same second share a task: count the
	// reminders in the tasks.
	queued := 0
	for page := 1; ; page++ {
		tasks, err := insp.ListScheduledTasks(queue, asynq.PageSize(1000), asynq.Page(page))
		if err != nil {
			return 0, err
		}
		for _, t := range tasks {
			rs, err := jobs.DecodeTask(t.Type, t.Payload)
			if err != nil {
				return 0, err
			}
			queued += len(rs)
		}
		if len(tasks) < 1000 {
			break
		}
	}
	if queued != n || scheduled != n {
		return 0, fmt.Errorf("%d reminders scheduled, want %d", queued, n)
	}
	return rate, nil
}
