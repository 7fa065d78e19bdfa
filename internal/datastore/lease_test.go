package datastore_test

import (
	"context"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/redistest"
)

var testLease = datastore.NewLease("test")

// A lease is its owner's until released or expired: another owner can
// neither take, renew nor delete it meanwhile.
func TestLease(t *testing.T) {
	rdb, prefix := redistest.New(t)
	ctx := context.Background()
	key := prefix + ":lease"
	step := func(what string, got bool, err error, want bool) {
		t.Helper()
		if err != nil || got != want {
			t.Fatalf("%s: %v, %v; want %v", what, got, err, want)
		}
	}
	ok, err := testLease.Acquire(ctx, rdb, key, "a", time.Minute)
	step("a takes the free lease", ok, err, true)
	ok, err = testLease.Acquire(ctx, rdb, key, "b", time.Minute)
	step("b takes a's lease", ok, err, false)
	ok, err = testLease.Renew(ctx, rdb, key, "b", time.Minute)
	step("b renews a's lease", ok, err, false)
	if err := testLease.Release(ctx, rdb, key, "b"); err != nil || rdb.Get(ctx, key).Val() != "a" {
		t.Fatalf("b released a's lease: %v, holder %q", err, rdb.Get(ctx, key).Val())
	}
	ok, err = testLease.Acquire(ctx, rdb, key, "a", 2*time.Minute)
	step("a takes its own lease again (renewed)", ok, err, true)
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= time.Minute {
		t.Errorf("TTL %v after a renewed for 2 min", ttl)
	}
	if err := testLease.Release(ctx, rdb, key, "a"); err != nil || rdb.Exists(ctx, key).Val() != 0 {
		t.Fatalf("a's release: %v, exists %d", err, rdb.Exists(ctx, key).Val())
	}

	// Expiry: a crashed owner's lease is taken; it can no longer renew it.
	ok, err = testLease.Acquire(ctx, rdb, key, "a", 50*time.Millisecond)
	step("a takes it for 50 ms", ok, err, true)
	time.Sleep(120 * time.Millisecond)
	ok, err = testLease.Acquire(ctx, rdb, key, "b", time.Minute)
	step("b takes the expired lease", ok, err, true)
	ok, err = testLease.Renew(ctx, rdb, key, "a", time.Minute)
	step("a renews the lease it lost", ok, err, false)

	// Pipelined, many leases in one call: only those the owner holds are
	// renewed and released.
	mine, theirs := prefix+":lease2", prefix+":lease3"
	for k, owner := range map[string]string{mine: "b", theirs: "c"} {
		if ok, err := testLease.Acquire(ctx, rdb, k, owner, time.Minute); !ok || err != nil {
			t.Fatalf("%s takes %s: %v, %v", owner, k, ok, err)
		}
	}
	all := []string{key, mine, theirs, prefix + ":none"}
	pipe := rdb.Pipeline()
	renew := testLease.RenewIn(ctx, pipe, all, "b", 3*time.Minute)
	other := testLease.ReleaseIn(ctx, pipe, all, "a")
	if _, err := pipe.Exec(ctx); err != nil || renew.Val() != int64(2) || other.Val() != int64(0) {
		t.Fatalf("pipeline: %v, b renewed %v (want 2), a released %v (want 0)", err, renew.Val(), other.Val())
	}
	if ttl := rdb.PTTL(ctx, theirs).Val(); ttl > time.Minute {
		t.Errorf("c's lease renewed by b: TTL %v", ttl)
	}
	pipe = rdb.Pipeline()
	rel := testLease.ReleaseIn(ctx, pipe, all, "b")
	if _, err := pipe.Exec(ctx); err != nil || rel.Val() != int64(2) || rdb.Exists(ctx, key, mine).Val() != 0 {
		t.Fatalf("b's pipelined release: %v, released %v (want 2), left %d", err, rel.Val(), rdb.Exists(ctx, key, mine).Val())
	}
	if rdb.Get(ctx, theirs).Val() != "c" {
		t.Fatalf("b's release took c's lease: holder %q", rdb.Get(ctx, theirs).Val())
	}
}
