package push

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"
)

// RetryConfig configures a Retrier. The zero value of every field means its default.
type RetryConfig struct {
	// MaxAttempts is the number of Send calls for one token, the first one included.
	// Default 4.
	MaxAttempts int
	// BaseDelay is the backoff before the first retry; it doubles for every further retry.
	// Default 200ms.
	BaseDelay time.Duration
	// MaxDelay caps the exponential backoff. Default 10s.
	MaxDelay time.Duration
	// MaxRetryAfter is the longest provider Retry-After the Retrier waits for. A token whose
	// Retry-After is longer is not retried here: it is returned as Retry with that
	// RetryAfter, for the caller to re-queue the whole task later. Default 30s.
	MaxRetryAfter time.Duration
	// Sleep waits for d or until ctx is done, returning ctx.Err() then. Default: a timer.
	// Tests inject a fake one.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter randomises a backoff delay. Default "equal jitter": uniformly in [d/2, d].
	Jitter func(d time.Duration) time.Duration
	// Logger receives one debug line per retry round. Default: discard.
	Logger *slog.Logger
}

// Retrier is a Sender that retries, with exponential backoff and jitter, only the tokens a
// wrapped Sender reported as Retry. It never sends again to a token that was Delivered or
// TokenInvalid, and waits at least the provider's Retry-After before a retry.
type Retrier struct {
	sender Sender
	cfg    RetryConfig
}

var _ Sender = (*Retrier)(nil)

// NewRetrier wraps sender with the retry policy of cfg.
func NewRetrier(sender Sender, cfg RetryConfig) (*Retrier, error) {
	if sender == nil {
		return nil, fmt.Errorf("%w: retrier: nil sender", ErrInvalidConfig)
	}
	if cfg.MaxAttempts < 0 || cfg.BaseDelay < 0 || cfg.MaxDelay < 0 || cfg.MaxRetryAfter < 0 {
		return nil, fmt.Errorf("%w: retrier: negative setting", ErrInvalidConfig)
	}
	cfg.MaxAttempts = cmp.Or(cfg.MaxAttempts, 4)
	cfg.BaseDelay = cmp.Or(cfg.BaseDelay, 200*time.Millisecond)
	cfg.MaxDelay = cmp.Or(cfg.MaxDelay, 10*time.Second)
	cfg.MaxRetryAfter = cmp.Or(cfg.MaxRetryAfter, 30*time.Second)
	if cfg.BaseDelay > cfg.MaxDelay {
		return nil, fmt.Errorf("%w: retrier: base delay %s above max delay %s", ErrInvalidConfig, cfg.BaseDelay, cfg.MaxDelay)
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Jitter == nil {
		cfg.Jitter = equalJitter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Retrier{sender: sender, cfg: cfg}, nil
}

// Platform returns the platform of the wrapped Sender.
func (r *Retrier) Platform() string { return r.sender.Platform() }

// Close closes the sender it wraps, if that has a Close.
func (r *Retrier) Close() error {
	if c, ok := r.sender.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Send sends msg to tokens and retries the tokens whose outcome is Retry, up to MaxAttempts
// calls in all. Tokens still failing after the last attempt, and tokens whose Retry-After
// exceeds MaxRetryAfter, come back as Retry for the caller to re-queue.
//
// When ctx ends or the wrapped Sender fails a whole call, Send returns the results known so
// far (tokens not yet delivered as Retry) together with the error.
func (r *Retrier) Send(ctx context.Context, msg Message, tokens []string) ([]Result, error) {
	results, err := r.sender.Send(ctx, msg, tokens)
	if err != nil {
		return results, err
	}
	if len(results) != len(tokens) {
		return nil, fmt.Errorf("push: %s sender returned %d results for %d tokens", r.sender.Platform(), len(results), len(tokens))
	}

	for attempt := 1; attempt < r.cfg.MaxAttempts; attempt++ {
		pending, wait := r.pending(results)
		if len(pending) == 0 {
			return results, nil
		}
		wait = max(wait, r.backoff(attempt))
		r.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "push retry",
			slog.String("platform", r.sender.Platform()),
			slog.Int("attempt", attempt+1),
			slog.Int("tokens", len(pending)),
			slog.Duration("wait", wait))
		if err := r.cfg.Sleep(ctx, wait); err != nil {
			return results, err
		}

		retryTokens := make([]string, len(pending))
		for i, idx := range pending {
			retryTokens[i] = tokens[idx]
		}
		again, err := r.sender.Send(ctx, msg, retryTokens)
		if len(again) == len(pending) {
			for i, idx := range pending {
				results[idx] = again[i]
			}
		}
		if err != nil {
			return results, err
		}
		if len(again) != len(pending) {
			return results, fmt.Errorf("push: %s sender returned %d results for %d tokens", r.sender.Platform(), len(again), len(pending))
		}
	}
	return results, nil
}

// pending returns the indexes of the results to retry and the longest Retry-After among
// them. Tokens whose Retry-After exceeds MaxRetryAfter are left out: they stay Retry for the
// caller.
func (r *Retrier) pending(results []Result) ([]int, time.Duration) {
	var idx []int
	var wait time.Duration
	for i, res := range results {
		if res.Outcome != Retry || res.RetryAfter > r.cfg.MaxRetryAfter {
			continue
		}
		idx = append(idx, i)
		wait = max(wait, res.RetryAfter)
	}
	return idx, wait
}

// backoff returns the jittered delay before retry number attempt (1 for the first retry).
func (r *Retrier) backoff(attempt int) time.Duration {
	d := r.cfg.BaseDelay
	for range attempt - 1 {
		if d > r.cfg.MaxDelay/2 { // doubling would pass the cap, or overflow
			d = r.cfg.MaxDelay
			break
		}
		d *= 2
	}
	return min(r.cfg.Jitter(d), r.cfg.MaxDelay)
}

func equalJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
