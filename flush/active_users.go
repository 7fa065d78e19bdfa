package flush

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// activeUsersChunk is how many (day, app) pairs are merged per round trip:
// a dense HyperLogLog is 12 KiB per shard.
const activeUsersChunk = 64

// hllMagic starts every Redis HyperLogLog value.
const hllMagic = "HYLL"

// dayApp is a (day, app) pair of the active users indexes and the shards
// that list it.
type dayApp struct {
	member string // "day|app", as in keys.ActiveUsersIndex
	day    time.Time
	app    string
	shards []int
	users  int64
	found  bool // users holds the count of the shards' HyperLogLogs
	empty  bool // no shard had a HyperLogLog to read: nothing to count
}

// flushActiveUsers sets daily_active_users for every (day, app) listed in
// any shard: the count of the union of the shards' HyperLogLogs. Pairs of
// days before yesterday are then removed from the indexes: this was their
// last count.
func (f *Flusher) flushActiveUsers(ctx context.Context, now time.Time) (Stats, error) {
	var st Stats
	ks := f.cfg.Keyspace
	pairs := map[string]*dayApp{}
	for shard := range ks.Shards {
		members, err := f.rdb.ZRange(ctx, ks.ActiveUsersIndex(shard), 0, -1).Result()
		if err != nil {
			return st, fmt.Errorf("flush active users: read index of shard %d: %w", shard, err)
		}
		for _, m := range members {
			p := pairs[m]
			if p == nil {
				dayText, app, ok := strings.Cut(m, "|")
				day, err := time.Parse("20060102", dayText)
				if !ok || err != nil {
					f.log.Warn("flush: bad active users index entry removed", "shard", shard, "member", truncate(m))
					if err := f.rdb.ZRem(ctx, ks.ActiveUsersIndex(shard), m).Err(); err != nil {
						return st, fmt.Errorf("flush active users: remove bad index entry: %w", err)
					}
					continue
				}
				p = &dayApp{member: m, day: day, app: app}
				pairs[m] = p
			}
			p.shards = append(p.shards, shard)
		}
	}
	if len(pairs) == 0 {
		return st, nil
	}
	list := make([]*dayApp, 0, len(pairs))
	for _, p := range pairs {
		list = append(list, p)
	}
	slices.SortFunc(list, func(a, b *dayApp) int { return strings.Compare(a.member, b.member) })

	var errs []error
	for chunk := range slices.Chunk(list, activeUsersChunk) {
		if err := f.countActiveUsers(ctx, chunk); err != nil {
			errs = append(errs, err)
		}
	}

	batch := &pgx.Batch{}
	for _, p := range list {
		if !p.found {
			continue
		}
		// GREATEST: the true count of a day only grows, so a lower estimate
		// means a shard's HyperLogLog expired or a stale replica raced this
		// one; it must not replace a better count. Flushing twice sets the
		// same value: the gauge is set, never added.
		batch.Queue(`INSERT INTO daily_active_users AS d (day, app, users, updated_at) VALUES ($1, $2, $3, now())
ON CONFLICT (day, app) DO UPDATE SET users = GREATEST(d.users, EXCLUDED.users), updated_at = now()`,
			p.day, p.app, p.users)
	}
	if batch.Len() > 0 {
		err := pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
		if err != nil {
			return st, errors.Join(append(errs, fmt.Errorf("flush active users: write: %w", err))...)
		}
		st.ActiveUsers = batch.Len()
	}
	if err := f.hook(StepActiveUsersWritten); err != nil {
		return st, err
	}

	// Days before yesterday are final: drop them from the indexes (their
	// HyperLogLogs expire by their own TTL).
	yesterday := now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
	pipe := f.rdb.Pipeline()
	for _, p := range list {
		if !p.day.Before(yesterday) || !(p.found || p.empty) {
			continue
		}
		for _, shard := range p.shards {
			pipe.ZRem(ctx, ks.ActiveUsersIndex(shard), p.member)
		}
		st.DaysClosed++
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush active users: remove past days: %w", err))
		}
	}
	return st, errors.Join(errs...)
}

// countActiveUsers reads the shards' HyperLogLogs of each pair and counts
// their union, in two round trips for the chunk.
func (f *Flusher) countActiveUsers(ctx context.Context, pairs []*dayApp) error {
	ks := f.cfg.Keyspace
	pipe := f.rdb.Pipeline()
	gets := make([][]*redis.StringCmd, len(pairs))
	for i, p := range pairs {
		dayText := p.day.Format("20060102")
		for _, shard := range p.shards {
			gets[i] = append(gets[i], pipe.Get(ctx, ks.ActiveUsers(shard, dayText, p.app)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("flush active users: read: %w", err)
	}

	merges := make([]*redis.Cmd, len(pairs))
	pipe = f.rdb.Pipeline()
	for i, p := range pairs {
		var raws []any
		for j, get := range gets[i] {
			raw, err := get.Result()
			switch {
			case errors.Is(err, redis.Nil):
				continue // expired
			case err != nil:
				return fmt.Errorf("flush active users: read: %w", err)
			case !strings.HasPrefix(raw, hllMagic):
				f.log.Warn("flush: active users key is not a HyperLogLog, skipped",
					"shard", p.shards[j], "day", p.day.Format(time.DateOnly), "app", truncate(p.app))
				continue
			}
			raws = append(raws, raw)
		}
		if len(raws) == 0 {
			p.empty = true
			continue
		}
		id := randomHex(8)
		tmp := make([]string, len(raws)+1)
		for k := range tmp {
			tmp[k] = ks.FlusherMerge(id, k)
		}
		// EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT.
		merges[i] = mergeScript.Eval(ctx, pipe, tmp, raws...)
	}
	if pipe.Len() == 0 {
		return nil
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	var errs []error
	for i, p := range pairs {
		if merges[i] == nil {
			continue
		}
		n, err := merges[i].Int64()
		if err != nil {
			f.log.Warn("flush: active users merge failed", "day", p.day.Format(time.DateOnly), "app", truncate(p.app), "err", err)
			errs = append(errs, fmt.Errorf("flush active users %s: %w", p.member, err))
			continue
		}
		p.users, p.found = n, true
	}
	return errors.Join(errs...)
}
