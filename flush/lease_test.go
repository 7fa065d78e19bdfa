package flush

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

func TestLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := redistest.New(t)
	db, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none") // the lease never touches Postgres
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	f, err := New(rdb, db, Config{Keyspace: keys.New(prefix, 2), LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	key := f.cfg.Keyspace.FlusherLease()
	if key != prefix+":{flusher}:lease" {
		t.Fatalf("FlusherLease = %q", key)
	}

	steps := []struct {
		name  string
		owner string
		held  bool
	}{
		{"a takes the free lease", "a", true},
		{"b cannot take it", "b", false},
		{"a renews it", "a", true},
	}
	for _, s := range steps {
		held, err := f.lease(ctx, s.owner)
		if err != nil || held != s.held {
			t.Fatalf("%s: held = %v, %v; want %v", s.name, held, err, s.held)
		}
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("lease TTL = %s, want up to a minute", ttl)
	}
	f.releaseLease("b") // not the owner: no effect
	if held, _ := f.lease(ctx, "b"); held {
		t.Fatal("b took the lease after releasing one it did not hold")
	}
	f.releaseLease("a")
	if held, _ := f.lease(ctx, "b"); !held {
		t.Fatal("b cannot take the released lease")
	}
}
