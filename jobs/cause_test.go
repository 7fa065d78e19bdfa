package jobs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/registry"
)

// A task's failure is counted by the store it came from, told by the
// error's type and the marks the worker puts where it calls the registry
// and asynq, never by its text: real errors of a real Redis and of a
// PostgreSQL that is not there.
func TestFailureCause(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := redistest.New(t)
	rdb.Set(ctx, prefix+"s", "x", time.Minute)
	wrongType := rdb.HGet(ctx, prefix+"s", "f").Err()
	gone := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer gone.Close()
	refused := gone.Get(ctx, "k").Err()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:1/nudge?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, pgDown := registry.New(pool).DevicesOf(ctx, []string{"u"})
	if pgDown == nil || wrongType == nil || refused == nil {
		t.Fatalf("errors expected: %v, %v, %v", pgDown, wrongType, refused)
	}
	shortCtx, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-shortCtx.Done()

	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("reminder state: %w", wrongType), "redis"},
		{fmt.Errorf("claim reminders: %w", refused), "redis"},
		{redis.Nil, "redis"},
		{fromRegistry(pgDown), "postgres"},
		{fmt.Errorf("devices: %w", pgDown), "postgres"}, // a connection error, unmarked: still not Redis's
		{fmt.Errorf("devices: %w", fromRegistry(pgDown)), "postgres"},
		{fromQueue(errors.New("UNKNOWN: redis eval error: OOM command not allowed")), "redis"},
		{fmt.Errorf("pending: %w", shortCtx.Err()), "timeout"},
		{&RetryError{After: time.Second, Err: errors.New("fcm tok: unavailable")}, "other"},
		{errors.New("finish reminders: postgres OOM registry:"), "other"},
	} {
		if got := failureCause(c.err); got != c.want {
			t.Errorf("failureCause(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
