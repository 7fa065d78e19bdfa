package report

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/keys"
)

// maxLiveHashes bounds the Redis hashes one live read takes: far more
// than a healthy flusher ever leaves (a few minutes per shard). Past it the
// flusher is behind and a live read would be slow; the error says so.
const maxLiveHashes = 20_000

// ErrLiveBacklog is returned by a live query when Redis holds more
// unflushed minutes in the range than a live read takes.
var ErrLiveBacklog = errors.New("report: live: too many unflushed minutes in Redis (is the flusher running?)")

// liveHash is one Redis hash of counters: a shard's minute, or a snapshot
// of it that the flusher took under flushID.
type liveHash struct {
	shard   int
	minute  int64
	flushID string // "" for a counters hash
	dims    []counters.Dims
	values  []int64
	dropped bool // its counters are in Postgres already
}

// liveData is the counters a live read found in Redis.
type liveData struct {
	hashes []*liveHash
	marker time.Time // Postgres clock before the counters hashes were read
}

// readLive reads from Redis the counters of the minutes in [from, to) that
// the flusher has not moved yet. Call dropApplied next, in the transaction
// that reads Postgres.
//
// A minute's counters are in one of three places: a counters hash
// (keys.Counters) until the flusher snapshots it; a snapshot hash
// (keys.Snapshot) under a flush id until the flush commits, and a little
// after; Postgres once committed. Snapshots are read before counters
// hashes, so a hash the flusher renames between the two reads is missed
// for this one request rather than read twice. Between the two, the
// Postgres clock is read (the marker of dropApplied).
func (s *Store) readLive(ctx context.Context, from, to time.Time) (*liveData, error) {
	if s.rdb == nil {
		return nil, paramErr("live", "live mode needs Redis, and this server has none configured")
	}
	lo := strconv.FormatInt(keys.Minute(from), 10)
	hi := "(" + strconv.FormatInt(keys.Minute(to.Add(time.Minute-1)), 10) // minutes that start before to
	l := &liveData{}
	if err := s.readHashes(ctx, l, lo, hi, true); err != nil {
		return nil, err
	}
	if err := s.db.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&l.marker); err != nil {
		return nil, fmt.Errorf("live: read the database clock: %w", err)
	}
	if err := s.readHashes(ctx, l, lo, hi, false); err != nil {
		return nil, err
	}
	return l, nil
}

// readHashes reads the hashes that the shards' snapshot indexes (or
// counter indexes) list for the minutes lo to hi (ZRANGE BYSCORE bounds).
func (s *Store) readHashes(ctx context.Context, l *liveData, lo, hi string, snapshots bool) error {
	ks := s.ks
	pipe := s.rdb.Pipeline()
	idx := make([]*redis.ZSliceCmd, ks.Shards)
	for shard := range ks.Shards {
		key := ks.CounterIndex(shard)
		if snapshots {
			key = ks.SnapshotIndex(shard)
		}
		idx[shard] = pipe.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key, ByScore: true, Start: lo, Stop: hi})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("live: read indexes: %w", err)
	}
	var found []*liveHash
	for shard, cmd := range idx {
		for _, z := range cmd.Val() {
			member, _ := z.Member.(string)
			h := &liveHash{shard: shard, minute: int64(z.Score)}
			if snapshots {
				h.flushID = member
			} else if m, err := strconv.ParseInt(member, 10, 64); err != nil || m != h.minute {
				continue // not written by counters.Add; the flusher drops it
			}
			found = append(found, h)
		}
	}
	if len(l.hashes)+len(found) > maxLiveHashes {
		return ErrLiveBacklog
	}
	if len(found) == 0 {
		return nil
	}
	pipe = s.rdb.Pipeline()
	gets := make([]*redis.MapStringStringCmd, len(found))
	for i, h := range found {
		key := ks.Counters(h.shard, h.minute)
		if snapshots {
			key = ks.Snapshot(h.shard, h.flushID)
		}
		gets[i] = pipe.HGetAll(ctx, key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("live: read counters: %w", err)
	}
	for i, h := range found {
		for field, v := range gets[i].Val() {
			d, err := counters.ParseField(field)
			if err != nil {
				continue // the flusher logs and skips it too
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n == 0 {
				continue
			}
			h.dims = append(h.dims, d)
			h.values = append(h.values, n)
		}
		if len(h.dims) > 0 {
			l.hashes = append(l.hashes, h)
		}
	}
	return nil
}

// dropApplied marks the hashes whose counters tx (a repeatable-read
// transaction started after readLive) already sees in the counters tables:
//
//   - a snapshot whose flush id is in the flushes table;
//   - a counters hash of a shard and minute with a flush applied after the
//     marker that readLive did not see as a snapshot: the flusher took and
//     committed it after it was read.
//
// A counter is therefore never counted twice. (The second rule also drops a
// hash that late increments re-created after its minute was flushed, if
// that flush committed during the read: those few increments show once
// the flusher moves them.)
func (l *liveData) dropApplied(ctx context.Context, tx pgx.Tx) error {
	var ids []string
	var minutes []int64
	seen := map[string]bool{}
	for _, h := range l.hashes {
		if h.flushID != "" {
			ids = append(ids, h.flushID)
			seen[h.flushID] = true
		} else {
			minutes = append(minutes, h.minute)
		}
	}
	applied := map[string]bool{}
	flushedAfter := map[[2]int64]bool{}
	rows, err := tx.Query(ctx, `SELECT flush_id, shard, coalesce(minute, -1), coalesce(applied_at >= @marker AND minute = ANY(@minutes), false)
FROM flushes
WHERE flush_id = ANY(@ids) OR (applied_at >= @marker AND minute = ANY(@minutes))`,
		pgx.NamedArgs{"ids": ids, "minutes": minutes, "marker": l.marker})
	if err != nil {
		return fmt.Errorf("live: read flushes: %w", err)
	}
	for rows.Next() {
		var (
			id           string
			shard        int64
			minute       int64
			afterAndSame bool
		)
		if err := rows.Scan(&id, &shard, &minute, &afterAndSame); err != nil {
			rows.Close()
			return fmt.Errorf("live: read flushes: %w", err)
		}
		if seen[id] {
			applied[id] = true
		} else if afterAndSame {
			flushedAfter[[2]int64{shard, minute}] = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("live: read flushes: %w", err)
	}
	for _, h := range l.hashes {
		if h.flushID != "" {
			h.dropped = applied[h.flushID]
		} else {
			h.dropped = flushedAfter[[2]int64{int64(h.shard), h.minute}]
		}
	}
	return nil
}

// each calls fn with every counter of a hash not dropped whose metric is in
// metrics, that filter keeps, of a minute in [from, to).
func (l *liveData) each(metrics map[string]bool, filter Filter, from, to time.Time, fn func(minute time.Time, d counters.Dims, v int64)) {
	if l == nil {
		return
	}
	lo, hi := keys.Minute(from), keys.Minute(to.Add(time.Minute-1))
	for _, h := range l.hashes {
		if h.dropped || h.minute < lo || h.minute >= hi {
			continue
		}
		at := time.Unix(h.minute*60, 0)
		for i, d := range h.dims {
			if metrics[d.Metric] && filter.keeps(d) {
				fn(at, d, h.values[i])
			}
		}
	}
}
