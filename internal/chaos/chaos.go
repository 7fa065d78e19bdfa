// Package chaos runs the pipeline under crashes and outages and checks
// that its promises hold: every accepted event counted exactly once in
// Postgres, unread state equal to an independent oracle, no device pushed
// twice for one reminder, nothing left pending, and of reminders: every
// episode still unread past its due time pushed or finished for a
// recorded reason, no push for an episode read before its due time.
//
// Two scenarios share one pipeline and one set of checks (pipeline.go):
// real ingest (two consumers), worker and flusher processes, and simulated
// traffic with producer retries (re-published ids), recorded for the
// oracle.
//
//   - Run (this file) has the push sandbox fail a share of requests (5xx,
//     429 with Retry-After, unregistered tokens), and SIGKILLs and restarts
//     a random process every few seconds while the traffic flows.
//   - RunRedisRestart (restart.go) runs a Redis of its own and stops and
//     starts it while the traffic flows; it also checks that no process
//     exits and that every binary works again by itself.
//
// cmd/chaos runs them from the command line; short variants run in the
// tests.
//
// The reminder checks (reminders.go) date each episode by the stream
// entry ids of the events that opened and closed it, and measure when
// ingest applied each entry by sampling the consumer group every 100 ms
// rather than assume a lag (a kill delays a shard by the 3 s claim idle
// time, and more). Once the traffic is applied, the worker runs until
// every first reminder due has been taken (orphans of a killed worker
// aside). Then each episode whose first reminder was due must show a
// push, an outcome recorded in its sent set (sent, failed, suppressed with
// a reason, or cancelled after the read that closed it), or a reminder
// still queued (put off, retrying, orphaned); and no push may be for an
// episode whose read was applied before the push's earliest due time. The
// one slack is workerSlack (10 s): a read published within it after the
// due time may delete the reminder before the worker starts it, so such
// episodes are not counted as due. Ingest keeps presence 5 s here, so that
// reminders put off while a user is online come due within the run. Only
// Run makes these checks (see RunRedisRestart for why).
package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nudgehq/nudge/push/sandbox"
)

// Config configures a run. The zero value of each field means its default.
type Config struct {
	// Root is the repository root, where the commands are built from. Default ".".
	Root string
	// RedisAddr is the Redis to use. Default 127.0.0.1:6379.
	RedisAddr string
	// DatabaseURL is an empty database to use (migrated by the run). Required.
	DatabaseURL string
	// Prefix is the key prefix of the run; its keys are the run's own. Required.
	Prefix string
	// Events is how many events the traffic publishes. Default 20,000.
	Events int64
	// Rate is the traffic's events per second. Default 1,000.
	Rate float64
	// KillEvery is the time between two kills. Default 3s.
	KillEvery time.Duration
	// Seed makes the traffic and the kills repeatable. Default 1.
	Seed uint64
	// Dir holds the binaries and the logs. Default a temporary directory.
	Dir string
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// Report is what a run found.
type Report struct {
	Events     int64            // distinct events published
	Published  int64            // entries published, re-published copies included
	Kills      map[string]int   // SIGKILLs by process
	Totals     map[string]int64 // Postgres totals by metric
	Expected   map[string]int64 // the oracle's totals by metric
	Pushes     int              // deliveries the sandbox accepted
	Duplicates int              // reminders a device got more than once
	Unread     int              // (user, conversation) pairs with unread messages
	Converted  int64            // reminders converted by a read, as the oracle has them (equal to Postgres's, or a failure says otherwise)

	// Episodes still unread when their first reminder was due, and what
	// became of that reminder (see checkReminders).
	EpisodesDue         int
	EpisodesPushed      int // pushed
	EpisodesFailed      int // pushed, but no device accepted it
	EpisodesSuppressed  int // suppressed for a recorded reason (muted, mentions only, no devices, digested)
	EpisodesCancelled   int // read after the due time, before the worker got to the reminder
	EpisodesQueued      int // still queued: put off (online, quiet hours, rate limit), retrying, or orphaned by a kill
	EpisodesUnaccounted int // none of these: a broken promise
	// ReadBeforeDue counts pushes for an episode read before the push's
	// earliest due time: a broken promise. ReadMargin is the least time
	// from that due time to the read, over pushed episodes that were read.
	ReadBeforeDue int
	ReadMargin    time.Duration

	Failures []string // broken promises; empty when the run passed
	Elapsed  time.Duration
}

// Passed reports whether every promise held.
func (r Report) Passed() bool { return len(r.Failures) == 0 }

func (r *Report) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// Run runs the pipeline, SIGKILLing a process every KillEvery while the
// traffic flows, and checks it. An error means the run could not be
// carried out; broken promises are in the Report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	start := time.Now()
	if cfg.RedisAddr == "" {
		cfg.RedisAddr = "127.0.0.1:6379"
	}
	cfg.KillEvery = cmp.Or(cfg.KillEvery, 3*time.Second)
	rep := Report{Kills: map[string]int{}}
	if cfg.DatabaseURL == "" || cfg.Prefix == "" {
		return rep, errors.New("chaos: DatabaseURL and Prefix are required")
	}
	dir, cleanup, err := runDir(cfg.Dir, "nudge-chaos")
	if err != nil {
		return rep, err
	}
	defer cleanup()
	s := setup{name: "chaos", root: cfg.Root, redisAddr: cfg.RedisAddr, databaseURL: cfg.DatabaseURL,
		prefix: cfg.Prefix, dir: dir, events: cfg.Events, rate: cfg.Rate, seed: cfg.Seed, log: cfg.Logger, reminders: true,
		push: sandbox.Chaos{Seed: cfg.Seed, ServerError: 0.05, RateLimited: 0.02, Unregistered: 0.01, RetryAfterSeconds: 1}}
	s.defaults()
	log := s.log
	p, trafficDone, err := startPipeline(ctx, s)
	if err != nil {
		return rep, err
	}
	defer p.close()

	// Kill a process every KillEvery while the traffic flows, each of them
	// once per round, in a random order.
	rng := rand.New(rand.NewPCG(s.seed, 7))
	var order []string
	tick := time.NewTicker(cfg.KillEvery)
	defer tick.Stop()
kills:
	for {
		select {
		case err := <-trafficDone:
			if err != nil {
				return rep, fmt.Errorf("traffic: %w", err)
			}
			break kills
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-tick.C:
			if len(order) == 0 {
				order = append(order, p.names...)
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			}
			victim := order[0]
			order = order[1:]
			log.Info("SIGKILL", "process", victim)
			if err := p.procs[victim].kill(); err != nil {
				return rep, err
			}
			if victim == "worker" {
				if err := p.orphaned.add(p.insp, p.queue); err != nil {
					return rep, err
				}
			}
			rep.Kills[victim]++
			if err := p.procs[victim].start(); err != nil {
				return rep, err
			}
		}
	}
	tick.Stop()
	log.Info("traffic done; waiting for ingest to catch up", "kills", rep.Kills)

	if err := p.finish(ctx, &rep, nil); err != nil {
		return rep, err
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}
