// Package flush moves analytics counters and daily active users from Redis
// to PostgreSQL.
//
// Ingest increments counters in one Redis hash per shard and minute
// (keys.Counters), listed in the shard's counter index. Every Interval the
// flusher takes each closed minute of each shard (its end plus Grace has
// passed) and, per minute:
//
//  1. snapshots it: a Lua script renames the hash to keys.Snapshot under a
//     new, unique flush id, removes the minute from the counter index and
//     lists the flush id in keys.SnapshotIndex, atomically;
//  2. writes it: one Postgres transaction records the flush id in the
//     flushes table and adds the counters to counters_minute, counters_hour
//     and counters_day; if the flush id was already recorded, the flush was
//     applied before and nothing is added;
//  3. deletes the snapshot and its index entry (Lua, atomic).
//
// Before new snapshots, every round finishes the snapshots still listed in
// the snapshot index (a dead flusher's leftovers, or a round that failed):
// their flush id makes the replay idempotent. A crash between any two steps
// therefore loses nothing and counts nothing twice.
//
// Each round also merges the per-shard HyperLogLogs of daily active users
// and sets daily_active_users (a gauge).
//
// Several replicas may run: a lease in Redis (keys.Keyspace.FlusherLease) lets one work at a
// time, and the flush ids keep totals exact when two overlap.
package flush

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/keys"
)

// Errors of the flusher.
var (
	// ErrConfig is returned by New for an invalid Config.
	ErrConfig = errors.New("flush: invalid config")
	// ErrLeaseLost stops a round of Run whose lease another flusher took.
	ErrLeaseLost = errors.New("flush: lease lost")
)

// Steps after which Config.Hook is called.
const (
	// StepSnapshotted: a closed minute was renamed to its snapshot; nothing
	// is written to Postgres yet.
	StepSnapshotted = "snapshotted"
	// StepWritten: the flush's rows are written in its transaction, not yet
	// committed.
	StepWritten = "written"
	// StepCommitted: the transaction committed (or was found applied
	// before); the snapshot is not deleted yet.
	StepCommitted = "committed"
	// StepDeleted: the snapshot and its index entry are deleted.
	StepDeleted = "deleted"
	// StepActiveUsersWritten: the daily active users of the round are
	// committed; the index entries of past days are not removed yet.
	StepActiveUsersWritten = "active-users-written"
)

// Defaults of Config.
const (
	DefaultInterval     = 10 * time.Second
	DefaultGrace        = 5 * time.Second
	DefaultFlushHistory = 30 * 24 * time.Hour
)

// minFlushHistory is the shortest FlushHistory: a snapshot may be replayed
// as long as it lives in Redis (at most counters.SafetyTTL), so its flush id
// must be remembered longer than that.
const minFlushHistory = counters.SafetyTTL + 24*time.Hour

// roundLimit caps the snapshots of one shard that one round finishes, and
// the closed minutes it takes, so that a round after a long outage stays
// short and shutdown stays quick; the next rounds take the rest.
const roundLimit = 240

// Config configures a Flusher. The zero value means defaults.
type Config struct {
	// Interval is the time between two rounds of Run. Default 10s.
	Interval time.Duration
	// Grace is how long after its end a minute is still left to writers
	// (clock skew between hosts, increments in flight) before it is
	// flushed. Default 5s.
	Grace time.Duration
	// Keyspace names the Redis keys: prefix and shard count. Default
	// keys.New("", 0): prefix "nudge", 8 shards; a zero field takes its
	// default alone.
	Keyspace keys.Keyspace
	// LeaseTTL is how long the lease of Run lasts without renewal: the time
	// another replica waits before taking over from a dead one, and the
	// longest Run spends finishing its round after ctx is done. Default
	// three Intervals; must exceed Interval.
	LeaseTTL time.Duration
	// FlushHistory is how long the ids of applied flushes are kept in the
	// flushes table. Default 30 days; at least counters.SafetyTTL plus a
	// day, the longest a snapshot can wait in Redis to be replayed.
	FlushHistory time.Duration
	// Metrics, if set, receives the flusher's Prometheus collectors
	// (nudge_flush_*). Default none.
	Metrics prometheus.Registerer
	// Logger receives the flusher's logs. Default slog.Default().
	Logger *slog.Logger
	// Now tells the time; minutes are closed and days are past by it.
	// Default time.Now. Tests set it.
	Now func() time.Time
	// Hook, if not nil, is called after each step of a flush with the
	// step's name (Step constants). A non-nil error stops the round right
	// there, as a crash would: tests use it to leave the state a dead
	// flusher leaves. Default nil.
	Hook func(step string) error
}

// Stats counts what a round did.
type Stats struct {
	// Snapshots is the closed minutes snapshotted.
	Snapshots int
	// Leftovers is the snapshots of earlier rounds (or dead flushers)
	// finished.
	Leftovers int
	// Flushes is the flushes committed to Postgres.
	Flushes int
	// Replayed is the flushes skipped because their id was applied before.
	Replayed int
	// Rows is the rows added to counters_minute.
	Rows int
	// BadFields is the counter fields skipped because they could not be
	// parsed.
	BadFields int
	// ActiveUsers is the daily_active_users rows set.
	ActiveUsers int
	// DaysClosed is the (day, app) pairs of past days persisted a last time
	// and removed from the index.
	DaysClosed int
}

func (s *Stats) add(o Stats) {
	s.Snapshots += o.Snapshots
	s.Leftovers += o.Leftovers
	s.Flushes += o.Flushes
	s.Replayed += o.Replayed
	s.Rows += o.Rows
	s.BadFields += o.BadFields
	s.ActiveUsers += o.ActiveUsers
	s.DaysClosed += o.DaysClosed
}

func (s Stats) empty() bool { return s == Stats{} }

func (s Stats) logAttrs() []any {
	return []any{
		"snapshots", s.Snapshots, "leftovers", s.Leftovers, "flushes", s.Flushes,
		"replayed", s.Replayed, "rows", s.Rows, "bad_fields", s.BadFields,
		"active_users", s.ActiveUsers, "days_closed", s.DaysClosed,
	}
}

// Flusher moves counters and daily active users from Redis to Postgres.
// Its methods are safe for concurrent use.
type Flusher struct {
	rdb redis.UniversalClient
	db  *pgxpool.Pool
	cfg Config
	log *slog.Logger
	met *metrics

	mu       sync.Mutex
	months   map[time.Time]bool // UTC month starts whose counters_minute partition exists
	prunedAt time.Time          // last prune of the flushes table
}

// New returns a Flusher of the counters in rdb to the database db, whose
// schema must be migrated (package schema).
func New(rdb redis.UniversalClient, db *pgxpool.Pool, cfg Config) (*Flusher, error) {
	if rdb == nil || db == nil {
		return nil, fmt.Errorf("%w: a Redis client and a Postgres pool are required", ErrConfig)
	}
	if cfg.Interval < 0 || cfg.Grace < 0 || cfg.LeaseTTL < 0 || cfg.FlushHistory < 0 || cfg.Keyspace.Shards < 0 {
		return nil, fmt.Errorf("%w: negative duration or shard count", ErrConfig)
	}
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	cfg.Grace = cmp.Or(cfg.Grace, DefaultGrace)
	cfg.Keyspace = keys.New(cfg.Keyspace.Prefix, cfg.Keyspace.Shards)
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, 3*cfg.Interval)
	if cfg.LeaseTTL <= cfg.Interval {
		return nil, fmt.Errorf("%w: LeaseTTL %s must exceed Interval %s, or the lease lapses between rounds", ErrConfig, cfg.LeaseTTL, cfg.Interval)
	}
	if cfg.LeaseTTL < time.Millisecond {
		return nil, fmt.Errorf("%w: LeaseTTL %s is under a millisecond", ErrConfig, cfg.LeaseTTL)
	}
	cfg.FlushHistory = cmp.Or(cfg.FlushHistory, DefaultFlushHistory)
	if cfg.FlushHistory < minFlushHistory {
		return nil, fmt.Errorf("%w: FlushHistory %s is shorter than a snapshot may live (%s)", ErrConfig, cfg.FlushHistory, minFlushHistory)
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Flusher{
		rdb:    rdb,
		db:     db,
		cfg:    cfg,
		log:    cfg.Logger,
		met:    newMetrics(cfg.Metrics),
		months: map[time.Time]bool{},
	}, nil
}

// FlushOnce runs one round without the lease: it finishes leftover
// snapshots, flushes every closed minute of every shard (up to a cap per
// shard) and persists daily active users. Errors of one shard do not stop
// the others; they are joined in the result.
func (f *Flusher) FlushOnce(ctx context.Context) (Stats, error) {
	return f.round(ctx, nil)
}

// Run runs a round every Interval while it holds the lease, until ctx is
// done. The round in progress when ctx is done is finished (within
// LeaseTTL), then the lease is released and Run returns nil. Failed rounds
// are logged and retried at the next tick.
func (f *Flusher) Run(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	owner := randomHex(8)
	defer f.releaseLease(owner)
	tick := time.NewTicker(f.cfg.Interval)
	defer tick.Stop()
	for {
		f.leasedRound(ctx, owner)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (f *Flusher) leasedRound(ctx context.Context, owner string) {
	// The round outlives ctx, so that a shutdown finishes it, but not by
	// more than LeaseTTL: by then another replica may have taken over.
	roundCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(f.cfg.LeaseTTL)
		defer t.Stop()
		select {
		case <-t.C:
			cancel(errors.New("flush: shutdown: round outlived LeaseTTL"))
		case <-roundCtx.Done():
		}
	})
	defer stop()

	keep := func(ctx context.Context) error {
		held, err := f.lease(ctx, owner)
		if err != nil {
			return err
		}
		if !held {
			return ErrLeaseLost
		}
		return nil
	}
	held, err := f.lease(roundCtx, owner)
	if err != nil {
		f.log.Error("flush: lease", "err", err)
		return
	}
	if !held {
		f.log.Debug("flush: lease held by another flusher")
		return
	}
	stats, err := f.round(roundCtx, keep)
	switch {
	case errors.Is(err, ErrLeaseLost):
		f.log.Warn("flush: lease taken by another flusher during the round", stats.logAttrs()...)
	case err != nil:
		f.log.Error("flush: round failed", append(stats.logAttrs(), "err", err)...)
	case !stats.empty():
		f.log.Info("flush: round", stats.logAttrs()...)
	default:
		f.log.Debug("flush: round", stats.logAttrs()...)
	}
}

// round does one round. keep, if not nil, is asked before each snapshot
// whether the round may go on (Run renews its lease there).
func (f *Flusher) round(ctx context.Context, keep func(context.Context) error) (st Stats, err error) {
	start := time.Now()
	defer func() {
		f.met.duration.Observe(time.Since(start).Seconds())
		f.met.rows.Add(float64(st.Rows))
		if err != nil {
			f.met.errors.Inc()
		} else {
			f.met.lastSuccess.SetToCurrentTime()
		}
	}()
	return f.doRound(ctx, keep)
}

func (f *Flusher) doRound(ctx context.Context, keep func(context.Context) error) (Stats, error) {
	now := f.cfg.Now()
	var (
		st   Stats
		errs []error
	)
	// Partitions ahead: this month's and the next.
	month := monthStart(now)
	if err := f.ensurePartitions(ctx, month, month.AddDate(0, 1, 0)); err != nil {
		errs = append(errs, err)
	}
	for shard := range f.cfg.Keyspace.Shards {
		s, err := f.flushShard(ctx, shard, now, keep)
		st.add(s)
		if stopped(err) || errors.Is(err, ErrLeaseLost) {
			return st, errors.Join(append(errs, err)...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("flush shard %d: %w", shard, err))
		}
	}
	s, err := f.flushActiveUsers(ctx, now)
	st.add(s)
	if stopped(err) {
		return st, err
	}
	if err != nil {
		errs = append(errs, err)
	}
	if err := f.pruneFlushes(ctx, now); err != nil {
		errs = append(errs, err)
	}
	return st, errors.Join(errs...)
}
