package datastore

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease is a lock with an owner and a lifetime: a string key holding the
// owner's token, with a TTL. The owner renews it while it works and
// deletes it when done; a crashed owner's lease expires, and another takes
// it. Ingest's shard leases, the flusher's lease and the worker's send
// locks are leases. Every operation checks the token inside a script, so
// an owner whose lease expired and was taken never renews or deletes the
// new owner's.
type Lease struct {
	acquire, renew, release Script
}

// NewLease returns the lease operations of component; their scripts count
// among the component's (CheckScripts).
func NewLease(component string) Lease {
	return Lease{
		// KEYS[1] lease; ARGV[1] owner, ARGV[2] TTL (ms). Returns 1 if the
		// owner holds it now (taken, or renewed), 0 if another does.
		acquire: NewScript(component, `
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`),
		// KEYS leases; ARGV[1] owner, ARGV[2] TTL (ms). Returns how many
		// were renewed: those the owner holds.
		renew: NewScript(component, `
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    n = n + redis.call('PEXPIRE', k, ARGV[2])
  end
end
return n`),
		// KEYS leases; ARGV[1] owner. Returns how many were deleted: those
		// the owner holds.
		release: NewScript(component, `
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    n = n + redis.call('DEL', k)
  end
end
return n`),
	}
}

// Acquire takes the lease key for owner if no one holds it, or renews it
// if owner does; it reports whether owner holds it now.
func (l Lease) Acquire(ctx context.Context, c redis.Scripter, key, owner string, ttl time.Duration) (bool, error) {
	n, err := l.acquire.Run(ctx, c, []string{key}, owner, ttl.Milliseconds()).Int()
	return n == 1, err
}

// Renew extends the lease key by ttl if owner holds it; false if owner
// lost it.
func (l Lease) Renew(ctx context.Context, c redis.Scripter, key, owner string, ttl time.Duration) (bool, error) {
	n, err := l.renew.Run(ctx, c, []string{key}, owner, ttl.Milliseconds()).Int()
	return n == 1, err
}

// Release deletes the lease key if owner holds it, so that another need
// not wait for it to expire.
func (l Lease) Release(ctx context.Context, c redis.Scripter, key, owner string) error {
	return l.release.Run(ctx, c, []string{key}, owner).Err()
}

// RenewIn and ReleaseIn queue, in a pipeline, one script call that renews
// or releases every lease of keys owner holds; the call's value is how
// many. The keys must share a hash slot (one shard's hash tag), for Redis
// Cluster; a pipeline holds a call per slot. (They send the script
// itself: a pipeline cannot fall back from EVALSHA when Redis does not
// have it cached.)
func (l Lease) RenewIn(ctx context.Context, pipe redis.Pipeliner, keys []string, owner string, ttl time.Duration) *redis.Cmd {
	return l.renew.Eval(ctx, pipe, keys, owner, ttl.Milliseconds())
}

// ReleaseIn: see RenewIn.
func (l Lease) ReleaseIn(ctx context.Context, pipe redis.Pipeliner, keys []string, owner string) *redis.Cmd {
	return l.release.Eval(ctx, pipe, keys, owner)
}
