package report

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/keys"
)

// Sessions records what ends browser sessions before they expire: a
// sign-out ends one session, RevokeAll every session. Each session cookie
// carries a random id and the epoch (generation) it was opened in; a
// session is valid while its id is not revoked and its epoch is the
// current one. What is recorded lives no longer than the sessions it
// ends (sessionTTL).
type Sessions interface {
	// Epoch returns the current epoch, that of new sessions.
	Epoch(ctx context.Context) (int64, error)
	// Valid reports whether session id of epoch is neither signed out nor
	// of an older epoch.
	Valid(ctx context.Context, id string, epoch int64) (bool, error)
	// Revoke ends session id, which would expire at until.
	Revoke(ctx context.Context, id string, until time.Time) error
	// RevokeAll ends every session opened so far.
	RevokeAll(ctx context.Context) error
}

// NewRedisSessions returns the Sessions of every server using the Redis
// rdb and Keyspace ks (keys SessionsEpoch and SessionRevoked): a sign-out
// seen by one replica counts on all of them, and across restarts as long
// as Redis keeps its data (deploy/README.md, "Redis persistence").
func NewRedisSessions(rdb redis.UniversalClient, ks keys.Keyspace) Sessions {
	return &redisSessions{rdb: rdb, ks: ks}
}

// RevokeAllSessions ends every browser session of the report servers
// using rdb and ks (what `report sessions revoke-all` runs).
func RevokeAllSessions(ctx context.Context, rdb redis.UniversalClient, ks keys.Keyspace) error {
	return NewRedisSessions(rdb, ks).RevokeAll(ctx)
}

type redisSessions struct {
	rdb redis.UniversalClient
	ks  keys.Keyspace
}

func (s *redisSessions) Epoch(ctx context.Context) (int64, error) {
	v, err := s.rdb.Get(ctx, s.ks.SessionsEpoch()).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sessions epoch: %w", err)
	}
	return v, nil
}

func (s *redisSessions) Valid(ctx context.Context, id string, epoch int64) (bool, error) {
	var (
		cur     *redis.StringCmd
		revoked *redis.IntCmd
	)
	// Both keys carry the hash tag {report}: one slot on a cluster.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cur = p.Get(ctx, s.ks.SessionsEpoch())
		revoked = p.Exists(ctx, s.ks.SessionRevoked(id))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("sessions: %w", err)
	}
	current := int64(0)
	if v, err := cur.Result(); err == nil {
		if current, err = strconv.ParseInt(v, 10, 64); err != nil {
			return false, fmt.Errorf("sessions epoch %q: %w", v, err)
		}
	}
	return revoked.Val() == 0 && epoch == current, nil
}

func (s *redisSessions) Revoke(ctx context.Context, id string, until time.Time) error {
	if err := s.rdb.SetArgs(ctx, s.ks.SessionRevoked(id), "1", redis.SetArgs{ExpireAt: until}).Err(); err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

func (s *redisSessions) RevokeAll(ctx context.Context) error {
	if err := s.rdb.Incr(ctx, s.ks.SessionsEpoch()).Err(); err != nil {
		return fmt.Errorf("revoke every session: %w", err)
	}
	return nil
}

// memorySessions are the Sessions of one process (no Redis): a sign-out
// counts on this server until it restarts.
type memorySessions struct {
	mu      sync.Mutex
	now     func() time.Time
	epoch   int64
	revoked map[string]time.Time // id -> when the session expires
}

func newMemorySessions(now func() time.Time) *memorySessions {
	return &memorySessions{now: now, revoked: map[string]time.Time{}}
}

func (s *memorySessions) Epoch(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch, nil
}

func (s *memorySessions) Valid(_ context.Context, id string, epoch int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, revoked := s.revoked[id]
	return !revoked && epoch == s.epoch, nil
}

func (s *memorySessions) Revoke(_ context.Context, id string, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, exp := range s.revoked { // bounded by the sign-outs of one session lifetime
		if !now.Before(exp) {
			delete(s.revoked, k)
		}
	}
	s.revoked[id] = until
	return nil
}

func (s *memorySessions) RevokeAll(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	clear(s.revoked)
	return nil
}
