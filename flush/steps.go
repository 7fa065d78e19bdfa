package flush

// What a round stops on, the test hooks between its steps, and the small
// pieces of its bookkeeping (flush ids, old flush records, partitions'
// months).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// stopError is a Hook's error: the round stops at once.
type stopError struct {
	step string
	err  error
}

func (e *stopError) Error() string { return "flush: stopped after " + e.step + ": " + e.err.Error() }

func (e *stopError) Unwrap() error { return e.err }

func stopped(err error) bool {
	var se *stopError
	return errors.As(err, &se)
}

// keepGoing asks keep, if any, whether the round may go on.
func keepGoing(ctx context.Context, keep func(context.Context) error) error {
	if keep == nil {
		return nil
	}
	return keep(ctx)
}

func (f *Flusher) hook(step string) error {
	if f.cfg.Hook == nil {
		return nil
	}
	if err := f.cfg.Hook(step); err != nil {
		return &stopError{step: step, err: err}
	}
	return nil
}

// pruneFlushes deletes, at most once an hour, the flush ids older than
// FlushHistory.
func (f *Flusher) pruneFlushes(ctx context.Context, now time.Time) error {
	f.mu.Lock()
	due := now.Sub(f.prunedAt) >= time.Hour
	f.mu.Unlock()
	if !due {
		return nil
	}
	tag, err := f.db.Exec(ctx, "DELETE FROM flushes WHERE applied_at < now() - make_interval(secs => $1)", f.cfg.FlushHistory.Seconds())
	if err != nil {
		return fmt.Errorf("flush: prune flushes: %w", err)
	}
	f.mu.Lock()
	f.prunedAt = now
	f.mu.Unlock()
	if n := tag.RowsAffected(); n > 0 {
		f.log.Info("flush: pruned flush ids", "rows", n, "older_than", f.cfg.FlushHistory.String())
	}
	return nil
}

// newFlushID returns a flush id no other flush has: shard, minute and 64
// random bits.
func newFlushID(shard int, minute int64) string {
	return strconv.Itoa(shard) + "-" + strconv.FormatInt(minute, 10) + "-" + randomHex(8)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}
