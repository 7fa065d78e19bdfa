package report

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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
	// Redeem uses up a one-time sign-in link's code: it returns the role
	// the link signs in as, RoleNone if the code is unknown, used or
	// expired.
	Redeem(ctx context.Context, code string) (Role, error)
}

// MaxSignInLinkTTL bounds how long a sign-in link stays usable.
const MaxSignInLinkTTL = 24 * time.Hour

// NewSignInLink makes a one-time sign-in link of the report servers using
// rdb and ks: a random code that GET /login?code= turns, once, before ttl
// has passed, into a browser session of role (the server must have a
// token of that role: sessions are signed with it). It returns the code;
// only its SHA-256 is stored. This is how a person gets a browser signed in
// without a secret in a URL that can be used twice, or on a command line.
func NewSignInLink(ctx context.Context, rdb redis.UniversalClient, ks keys.Keyspace, role Role, ttl time.Duration) (string, error) {
	if role != RoleReader && role != RoleAdmin {
		return "", fmt.Errorf("sign-in link: role %s: want reader or admin", role)
	}
	if ttl <= 0 || ttl > MaxSignInLinkTTL {
		return "", fmt.Errorf("sign-in link: lifetime %s: want more than 0 and at most %s", ttl, MaxSignInLinkTTL)
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	code := hex.EncodeToString(b[:])
	if err := rdb.Set(ctx, ks.SignInLink(codeSum(code)), role.code(), ttl).Err(); err != nil {
		return "", fmt.Errorf("sign-in link: %w", err)
	}
	return code, nil
}

func codeSum(code string) string {
	s := sha256.Sum256([]byte(code))
	return hex.EncodeToString(s[:])
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

func (s *redisSessions) Redeem(ctx context.Context, code string) (Role, error) {
	v, err := s.rdb.GetDel(ctx, s.ks.SignInLink(codeSum(code))).Result()
	if errors.Is(err, redis.Nil) {
		return RoleNone, nil
	}
	if err != nil {
		return RoleNone, fmt.Errorf("sign-in link: %w", err)
	}
	return roleOfCode(v), nil
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

// Redeem knows no code: sign-in links are made in Redis, which a server
// without it cannot read.
func (s *memorySessions) Redeem(context.Context, string) (Role, error) {
	return RoleNone, errNoLinks
}

var errNoLinks = errors.New("sign-in links need the server to use Redis (-redis-url)")

func (s *memorySessions) RevokeAll(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	clear(s.revoked)
	return nil
}
