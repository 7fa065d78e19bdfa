package report

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/keys"
)

// DefaultMaxPoints is StoreConfig.MaxPoints when zero.
const DefaultMaxPoints = 10_000

// maxMetrics bounds the metrics of one totals query.
const maxMetrics = 50

// StoreConfig configures a Store. The zero value means defaults.
type StoreConfig struct {
	// Redis is where live queries read the counters the flusher has not
	// moved to Postgres yet. Default nil: live queries fail with a
	// ParamError.
	Redis redis.UniversalClient
	// Keyspace names the Redis keys: the prefix and shard count ingest
	// uses. Default keys.New("", 0): prefix "nudge", 8 shards; a zero
	// field takes its default alone.
	Keyspace keys.Keyspace
	// MaxPoints bounds the points of one answer: buckets times groups of a
	// series, days times apps of daily active users. A query over it fails
	// with a ParamError. Default DefaultMaxPoints (10000).
	MaxPoints int
}

// Store answers report queries from the counters tables in Postgres and,
// in live mode, from the counters still in Redis. Its methods are safe for
// concurrent use. It only reads: a role with SELECT on the counters tables,
// daily_active_users and flushes is enough (README.md).
type Store struct {
	db        *pgxpool.Pool
	rdb       redis.UniversalClient
	ks        keys.Keyspace
	maxPoints int

	// afterLiveRead, if set, runs between the Redis and Postgres reads of
	// a live query. Tests set it (export_test.go) to race the flusher.
	afterLiveRead func()
}

// NewStore returns a Store reading the database db, whose schema must be
// migrated (package schema).
func NewStore(db *pgxpool.Pool, cfg StoreConfig) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: a Postgres pool is required", ErrConfig)
	}
	if cfg.MaxPoints < 0 || cfg.Keyspace.Shards < 0 {
		return nil, fmt.Errorf("%w: negative MaxPoints or shard count", ErrConfig)
	}
	cfg.MaxPoints = cmp.Or(cfg.MaxPoints, DefaultMaxPoints)
	return &Store{
		db:        db,
		rdb:       cfg.Redis,
		ks:        keys.New(cfg.Keyspace.Prefix, cfg.Keyspace.Shards),
		maxPoints: cfg.MaxPoints,
	}, nil
}

// HasLive reports whether the Store can answer live queries.
func (s *Store) HasLive() bool { return s.rdb != nil }

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.Ping(ctx) }

// querier is what report queries run on: the pool, or the transaction of a
// live read.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// read runs fn on the database. Live, it first reads Redis for the minutes
// of [from, to), then runs fn in a read-only repeatable-read transaction
// whose snapshot also decides which Redis counters Postgres already has;
// fn gets the rest.
func (s *Store) read(ctx context.Context, live bool, from, to time.Time, fn func(q querier, l *liveData) error) error {
	if !live {
		return fn(s.db, nil)
	}
	l, err := s.readLive(ctx, from, to)
	if err != nil {
		return err
	}
	if s.afterLiveRead != nil {
		s.afterLiveRead()
	}
	return pgx.BeginTxFunc(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := l.dropApplied(ctx, tx); err != nil {
			return err
		}
		return fn(tx, l)
	})
}

func validRange(from, to time.Time) error {
	if from.IsZero() || to.IsZero() {
		return paramErr("from", "from and to are required")
	}
	if !from.Before(to) {
		return paramErr("from", "must be before to (from %s, to %s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return nil
}
