package jobs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// A task that ran while Redis is away hands its result to asynq only once
// Redis answers again (so asynq can record it), or after the limit; with
// Redis up it returns at once.
func TestAwaitRedis(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	boom := errors.New("boom")
	task := asynq.NewTask("reminder", nil)
	run := func(ctx context.Context, result error, ping func(context.Context) error, limit time.Duration) (error, time.Duration) {
		h := awaitRedis(ping, limit, quiet)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return result }))
		start := time.Now()
		err := h.ProcessTask(ctx, task)
		return err, time.Since(start)
	}
	bg := context.Background()
	down := func(context.Context) error { return errors.New("connection refused") }
	up := func(context.Context) error { return nil }

	for _, result := range []error{boom, nil, asynq.SkipRetry} {
		var pings atomic.Int32
		backAfter3 := func(context.Context) error {
			if pings.Add(1) <= 3 {
				return errors.New("connection refused")
			}
			return nil
		}
		// Waits of 100, 200 and 400 ms between the four pings.
		if err, d := run(bg, result, backAfter3, time.Minute); !errors.Is(err, result) || d < 700*time.Millisecond || d > 5*time.Second {
			t.Errorf("result %v, Redis back at the 4th ping: %v after %v, want the result after about 700ms", result, err, d)
		}
		if n := pings.Load(); n != 4 {
			t.Errorf("result %v: %d pings, want 4", result, n)
		}
		if err, d := run(bg, result, up, time.Minute); !errors.Is(err, result) || d > 100*time.Millisecond {
			t.Errorf("result %v, Redis up: %v after %v, want it at once", result, err, d)
		}
	}
	if err, d := run(bg, boom, down, 500*time.Millisecond); !errors.Is(err, boom) || d < 500*time.Millisecond || d > 2*time.Second {
		t.Errorf("Redis down: %v after %v, want boom after the 500ms limit", err, d)
	}
	// The task's context ends the wait.
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	defer cancel()
	if err, d := run(ctx, boom, down, time.Minute); !errors.Is(err, boom) || d > time.Second {
		t.Errorf("context ended: %v after %v, want boom at once", err, d)
	}
}
