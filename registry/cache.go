package registry

import (
	"context"
	"sync"
	"time"
)

// Cache serves Devices and Prefs from memory for TTL, in front of a Store:
// the worker asks for the same users again and again. RemoveToken goes to
// the Store and forgets the cached devices of everyone.
type Cache struct {
	store *Store
	ttl   time.Duration
	max   int
	now   func() time.Time

	mu      sync.Mutex
	devices map[string]cached[[]Device]
	prefs   map[string]cached[Prefs]
}

type cached[T any] struct {
	v   T
	exp time.Time
}

// NewCache caches store for ttl (default 30s), holding at most max users
// (default 100,000) of each kind.
func NewCache(store *Store, ttl time.Duration, max int) *Cache {
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	if max <= 0 {
		max = 100_000
	}
	return &Cache{store: store, ttl: ttl, max: max, now: time.Now,
		devices: map[string]cached[[]Device]{}, prefs: map[string]cached[Prefs]{}}
}

func lookup[T any](c *Cache, m map[string]cached[T], user string, load func() (T, error)) (T, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := m[user]
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.v, nil
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if len(m) >= c.max {
		for k := range m { // evict an arbitrary tenth
			delete(m, k)
			if len(m) < c.max*9/10 {
				break
			}
		}
	}
	m[user] = cached[T]{v: v, exp: now.Add(c.ttl)}
	c.mu.Unlock()
	return v, nil
}

// Devices returns a user's devices.
func (c *Cache) Devices(ctx context.Context, user string) ([]Device, error) {
	return lookup(c, c.devices, user, func() ([]Device, error) { return c.store.Devices(ctx, user) })
}

// Prefs returns a user's preferences.
func (c *Cache) Prefs(ctx context.Context, user string) (Prefs, error) {
	return lookup(c, c.prefs, user, func() (Prefs, error) { return c.store.Prefs(ctx, user) })
}

// ReminderDelay returns a user's first-reminder delay (0: the default).
func (c *Cache) ReminderDelay(ctx context.Context, user string) (time.Duration, error) {
	p, err := c.Prefs(ctx, user)
	return p.ReminderDelay, err
}

// RemoveToken deletes an invalid token and drops the cached devices.
func (c *Cache) RemoveToken(ctx context.Context, platform, token string) error {
	if err := c.store.RemoveToken(ctx, platform, token); err != nil {
		return err
	}
	c.mu.Lock()
	c.devices = map[string]cached[[]Device]{}
	c.mu.Unlock()
	return nil
}
