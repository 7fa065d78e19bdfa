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
	delays  map[string]cached[time.Duration]
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
		devices: map[string]cached[[]Device]{}, prefs: map[string]cached[Prefs]{}, delays: map[string]cached[time.Duration]{}}
}

// lookup returns the entries of users in m that are fresh, and loads the
// rest with one call of load, caching what it returns. A user load leaves
// out gets zero.
func lookup[T any](c *Cache, m map[string]cached[T], users []string, zero T, load func(missing []string) (map[string]T, error)) (map[string]T, error) {
	now := c.now()
	out := make(map[string]T, len(users))
	var missing []string
	c.mu.Lock()
	for _, u := range users {
		if e, ok := m[u]; ok && now.Before(e.exp) {
			out[u] = e.v
		} else {
			missing = append(missing, u)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	got, err := load(missing)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(m)+len(missing) > c.max {
		for k := range m { // evict an arbitrary part
			delete(m, k)
			if len(m)+len(missing) <= c.max*9/10 {
				break
			}
		}
	}
	for _, u := range missing {
		v, ok := got[u]
		if !ok {
			v = zero
		}
		m[u] = cached[T]{v: v, exp: now.Add(c.ttl)}
		out[u] = v
	}
	c.mu.Unlock()
	return out, nil
}

// Devices returns a user's devices.
func (c *Cache) Devices(ctx context.Context, user string) ([]Device, error) {
	m, err := c.DevicesOf(ctx, []string{user})
	return m[user], err
}

// DevicesOf returns the devices of each of users, the ones not in memory
// in one query.
func (c *Cache) DevicesOf(ctx context.Context, users []string) (map[string][]Device, error) {
	return lookup(c, c.devices, users, nil, func(missing []string) (map[string][]Device, error) {
		return c.store.DevicesOf(ctx, missing)
	})
}

// Prefs returns a user's preferences.
func (c *Cache) Prefs(ctx context.Context, user string) (Prefs, error) {
	m, err := c.PrefsOf(ctx, []string{user})
	if err != nil {
		return DefaultPrefs, err
	}
	return m[user], nil
}

// PrefsOf returns the preferences of each of users, the ones not in
// memory in one round of queries.
func (c *Cache) PrefsOf(ctx context.Context, users []string) (map[string]Prefs, error) {
	return lookup(c, c.prefs, users, DefaultPrefs, func(missing []string) (map[string]Prefs, error) {
		return c.store.PrefsOf(ctx, missing)
	})
}

// Warm reads the devices and preferences of users that are not in memory,
// so that asking for them within TTL finds them there. The worker warms
// the cache for a task's users while the task waits for its due time.
func (c *Cache) Warm(ctx context.Context, users []string) error {
	if _, err := c.DevicesOf(ctx, users); err != nil {
		return err
	}
	_, err := c.PrefsOf(ctx, users)
	return err
}

// ReminderDelay returns a user's first-reminder delay (0: the default).
func (c *Cache) ReminderDelay(ctx context.Context, user string) (time.Duration, error) {
	p, err := c.Prefs(ctx, user)
	return p.ReminderDelay, err
}

// ReminderDelays returns the first-reminder delay of each user that has one
// (absent: the default), from memory where fresh, the rest in one query.
// When the query fails it returns the error together with what it knows:
// fresh entries, and stale ones of users asked about before (the last
// known delay), so that a caller can go on with them while PostgreSQL is
// away.
func (c *Cache) ReminderDelays(ctx context.Context, users []string) (map[string]time.Duration, error) {
	now := c.now()
	out := make(map[string]time.Duration, len(users))
	var missing []string
	stale := map[string]time.Duration{}
	c.mu.Lock()
	for _, u := range users {
		e, ok := c.delays[u]
		switch {
		case ok && now.Before(e.exp):
			if e.v > 0 {
				out[u] = e.v
			}
		default:
			if ok && e.v > 0 {
				stale[u] = e.v
			}
			missing = append(missing, u)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	got, err := c.store.ReminderDelays(ctx, missing)
	if err != nil {
		for u, d := range stale {
			out[u] = d
		}
		return out, err
	}
	c.mu.Lock()
	if len(c.delays)+len(missing) > c.max {
		for k := range c.delays { // evict an arbitrary part
			delete(c.delays, k)
			if len(c.delays)+len(missing) <= c.max*9/10 {
				break
			}
		}
	}
	for _, u := range missing {
		d := got[u]
		c.delays[u] = cached[time.Duration]{v: d, exp: now.Add(c.ttl)}
		if d > 0 {
			out[u] = d
		}
	}
	c.mu.Unlock()
	return out, nil
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
