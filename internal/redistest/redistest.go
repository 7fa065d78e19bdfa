// Package redistest gives tests a real Redis with an isolated key prefix.
//
// Tests talk to the Redis at NUDGE_TEST_REDIS_ADDR (default 127.0.0.1:6379).
// Each call to New returns a fresh random prefix; every key under it is
// deleted when the test ends, so tests may run in parallel on one server.
//
// Under go test -short every helper that needs a service skips the test.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/keys"
)

// Addr is the address of the test Redis.
func Addr() string {
	if a := os.Getenv("NUDGE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// RandomPrefix returns a key prefix no other test uses.
func RandomPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// New returns a client of the test Redis and a random key prefix. The keys
// under the prefix are deleted and the client closed at the end of the test.
func New(t testing.TB) (*redis.Client, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("redistest: needs Redis (go test -short runs only what needs no service)")
	}
	rdb := redis.NewClient(&redis.Options{Addr: Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("redistest: no Redis at %s (start it with scripts/services.sh): %v", Addr(), err)
	}
	prefix := RandomPrefix()
	t.Cleanup(func() {
		DeletePrefix(t, rdb, prefix)
		_ = rdb.Close()
	})
	return rdb, prefix
}

// Bulk returns a client of the test Redis with one-minute read and write
// timeouts, for a test's set-up of many megabytes (a pipeline of 64
// entries of 2 MB outlasts the default 3 s on a busy machine). It is
// closed at the end of the test.
func Bulk(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: Addr(), ReadTimeout: time.Minute, WriteTimeout: time.Minute})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// DeleteQueue deletes every key of an asynq queue of the test's and the
// queue from asynq's list of queues. (asynq's Inspector.DeleteQueue, even
// forced, leaves the hashes of some tasks and the queue's total counters
// behind, with no TTL.)
func DeleteQueue(t testing.TB, rdb redis.UniversalClient, queue string) {
	t.Helper()
	DeletePrefix(t, rdb, keys.AsynqQueue(queue))
	rdb.SRem(context.Background(), keys.AsynqQueues, queue)
}

// DeletePrefix deletes every key that starts with prefix.
func DeletePrefix(t testing.TB, rdb redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	keys, err := Keys(ctx, rdb, prefix)
	if err != nil {
		t.Logf("redistest: scan %s: %v", prefix, err)
		return
	}
	for _, k := range keys {
		rdb.Del(ctx, k)
	}
}

// Keys returns every key that starts with prefix, found with SCAN.
func Keys(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]string, error) {
	var out []string
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			out = append(out, iter.Val())
		}
		return iter.Err()
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return scan(ctx, n) })
		return out, err
	case *redis.Client:
		return out, scan(ctx, c)
	}
	return nil, nil
}
