package push_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nudgehq/nudge/push"
)

// scriptedSender answers from a script: per token, the outcomes of its successive sends
// (the last one repeats). It records every call.
type scriptedSender struct {
	mu      sync.Mutex
	script  map[string][]push.Result
	sent    map[string]int
	calls   [][]string
	failOn  map[int]error // call number (0-based) -> whole-call error
	onCall  func(call int)
	results func(call int, res []push.Result) []push.Result // optional tampering
}

func (s *scriptedSender) Platform() string { return "test" }

// closingSender is a scriptedSender with a Close.
type closingSender struct {
	scriptedSender
	closed int
}

func (s *closingSender) Close() error { s.closed++; return nil }

// A Retrier closes the sender it wraps, when that has a Close.
func TestRetrierCloses(t *testing.T) {
	t.Parallel()
	s := &closingSender{}
	r, _ := newRetrier(t, s, push.RetryConfig{})
	if err := r.Close(); err != nil || s.closed != 1 {
		t.Errorf("Close: %v, the sender closed %d times; want once", err, s.closed)
	}
	r, _ = newRetrier(t, &scriptedSender{}, push.RetryConfig{})
	if err := r.Close(); err != nil {
		t.Errorf("Close of a sender without one: %v", err)
	}
}

func (s *scriptedSender) Send(ctx context.Context, msg push.Message, tokens []string) ([]push.Result, error) {
	s.mu.Lock()
	call := len(s.calls)
	s.calls = append(s.calls, slices.Clone(tokens))
	if s.sent == nil {
		s.sent = map[string]int{}
	}
	res := make([]push.Result, len(tokens))
	for i, tok := range tokens {
		steps := s.script[tok]
		r := push.Result{Outcome: push.Delivered, Reason: push.ReasonDelivered}
		if len(steps) > 0 {
			r = steps[min(s.sent[tok], len(steps)-1)]
		}
		r.Token = tok
		res[i] = r
		s.sent[tok]++
	}
	onCall, tamper, err := s.onCall, s.results, s.failOn[call]
	s.mu.Unlock()
	if onCall != nil {
		onCall(call)
	}
	if tamper != nil {
		res = tamper(call, res)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

var (
	delivered   = push.Result{Outcome: push.Delivered, Reason: push.ReasonDelivered}
	unavailable = push.Result{Outcome: push.Retry, Reason: push.ReasonUnavailable}
	gone        = push.Result{Outcome: push.TokenInvalid, Reason: push.ReasonUnregistered}
)

func rateLimited(after time.Duration) push.Result {
	return push.Result{Outcome: push.Retry, Reason: push.ReasonRateLimited, RetryAfter: after}
}

// fakeSleep records the waits and never sleeps.
type fakeSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, d)
	return ctx.Err()
}

func newRetrier(t *testing.T, s push.Sender, cfg push.RetryConfig) (*push.Retrier, *fakeSleep) {
	t.Helper()
	fs := &fakeSleep{}
	cfg.Sleep = fs.sleep
	if cfg.Jitter == nil {
		cfg.Jitter = func(d time.Duration) time.Duration { return d }
	}
	r, err := push.NewRetrier(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, fs
}

func outcomes(res []push.Result) string {
	var out []string
	for _, r := range res {
		out = append(out, r.Token+":"+r.Outcome.String())
	}
	return fmt.Sprint(out)
}

// Each case scripts the sender's answers per token, attempt by attempt
// (the last one repeats), and states what the Retrier gives back, which
// tokens each call carried and how long it waited between calls.
func TestRetrierRounds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name                        string
		script                      map[string][]push.Result
		cfg                         push.RetryConfig
		tokens                      []string
		outcomes, calls, waits, why string
	}{
		{
			name:     "only failed tokens are sent again",
			script:   map[string][]push.Result{"b": {unavailable, delivered}, "c": {gone}, "d": {unavailable, unavailable, delivered}},
			tokens:   []string{"a", "b", "c", "d"},
			outcomes: "[a:delivered b:delivered c:token_invalid d:delivered]",
			calls:    "[[a b c d] [b d] [d]]", waits: "[200ms 400ms]",
			why: "never resend to delivered or invalid tokens",
		},
		{
			name:     "Retry-After honoured",
			script:   map[string][]push.Result{"a": {rateLimited(3 * time.Second), delivered}, "b": {rateLimited(time.Second), delivered}, "c": {unavailable, rateLimited(50 * time.Millisecond), delivered}},
			tokens:   []string{"a", "b", "c"},
			outcomes: "[a:delivered b:delivered c:delivered]",
			calls:    "[[a b c] [a b c] [c]]", waits: "[3s 400ms]",
			why: "the round's longest Retry-After (3s) beats the backoff; then the 400ms backoff beats a 50ms Retry-After",
		},
		{
			name:     "a Retry-After over MaxRetryAfter goes back to the caller",
			script:   map[string][]push.Result{"slow": {rateLimited(2 * time.Minute)}, "b": {unavailable, delivered}},
			cfg:      push.RetryConfig{MaxRetryAfter: time.Minute},
			tokens:   []string{"slow", "b"},
			outcomes: "[slow:retry(rate_limited, after 2m0s) b:delivered]",
			calls:    "[[slow b] [b]]", waits: "[200ms]",
			why: "never waits the 2m Retry-After: the caller re-queues",
		},
		{
			name:     "stops after MaxAttempts",
			script:   map[string][]push.Result{"a": {unavailable}},
			cfg:      push.RetryConfig{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: 300 * time.Millisecond},
			tokens:   []string{"a"},
			outcomes: "[a:retry(unavailable)]",
			calls:    "[[a] [a] [a] [a] [a]]", waits: "[100ms 200ms 300ms 300ms]",
			why: "waits double, capped",
		},
		{
			name:     "a single attempt",
			script:   map[string][]push.Result{"a": {unavailable}},
			cfg:      push.RetryConfig{MaxAttempts: 1},
			tokens:   []string{"a"},
			outcomes: "[a:retry(unavailable)]",
			calls:    "[[a]]", waits: "[]",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := &scriptedSender{script: c.script}
			r, fs := newRetrier(t, s, c.cfg)
			res, err := r.Send(t.Context(), push.Message{Title: "t"}, c.tokens)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range res {
				o := r.Token + ":" + r.Outcome.String()
				if r.Outcome == push.Retry {
					o += "(" + r.Reason
					if r.RetryAfter > 0 {
						o += ", after " + r.RetryAfter.String()
					}
					o += ")"
				}
				got = append(got, o)
			}
			if got := fmt.Sprint(got); got != c.outcomes {
				t.Errorf("outcomes %s, want %s", got, c.outcomes)
			}
			if got := fmt.Sprint(s.calls); got != c.calls {
				t.Errorf("calls %s, want %s (%s)", got, c.calls, c.why)
			}
			if got := fmt.Sprint(fs.waits); got != c.waits {
				t.Errorf("waits %s, want %s (%s)", got, c.waits, c.why)
			}
		})
	}
}

func TestRetrierContextCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	s := &scriptedSender{
		script: map[string][]push.Result{"b": {unavailable, delivered}},
		onCall: func(int) { cancel() }, // the context ends during the first call
	}
	r, _ := newRetrier(t, s, push.RetryConfig{})
	res, err := r.Send(ctx, push.Message{Title: "t"}, []string{"a", "b"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got, want := outcomes(res), "[a:delivered b:retry]"; got != want {
		t.Errorf("outcomes %s, want %s: what is known comes back with the error", got, want)
	}
	if len(s.calls) != 1 {
		t.Errorf("%d calls, want 1", len(s.calls))
	}
}

func TestRetrierWholeCallErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")

	t.Run("first call", func(t *testing.T) {
		t.Parallel()
		s := &scriptedSender{failOn: map[int]error{0: boom}}
		r, _ := newRetrier(t, s, push.RetryConfig{})
		if _, err := r.Send(t.Context(), push.Message{Title: "t"}, []string{"a"}); !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		if len(s.calls) != 1 {
			t.Errorf("%d calls, want 1: whole-call errors are not retried", len(s.calls))
		}
	})
	t.Run("retry call keeps earlier results", func(t *testing.T) {
		t.Parallel()
		s := &scriptedSender{
			script: map[string][]push.Result{"b": {unavailable}},
			failOn: map[int]error{1: boom},
		}
		r, _ := newRetrier(t, s, push.RetryConfig{})
		res, err := r.Send(t.Context(), push.Message{Title: "t"}, []string{"a", "b"})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
		if got, want := outcomes(res), "[a:delivered b:retry]"; got != want {
			t.Errorf("outcomes %s, want %s", got, want)
		}
	})
	t.Run("wrong result count", func(t *testing.T) {
		t.Parallel()
		s := &scriptedSender{results: func(int, []push.Result) []push.Result { return nil }}
		r, _ := newRetrier(t, s, push.RetryConfig{})
		if _, err := r.Send(t.Context(), push.Message{Title: "t"}, []string{"a"}); err == nil {
			t.Fatal("no error for a sender that returned no results")
		}
	})
}

func TestNewRetrierConfig(t *testing.T) {
	t.Parallel()
	s := &scriptedSender{}
	for name, cfg := range map[string]push.RetryConfig{
		"negative attempts": {MaxAttempts: -1},
		"negative delay":    {BaseDelay: -time.Second},
		"base above max":    {BaseDelay: time.Minute, MaxDelay: time.Second},
	} {
		if _, err := push.NewRetrier(s, cfg); !errors.Is(err, push.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := push.NewRetrier(nil, push.RetryConfig{}); !errors.Is(err, push.ErrInvalidConfig) {
		t.Errorf("nil sender: err = %v, want ErrInvalidConfig", err)
	}
	r, err := push.NewRetrier(s, push.RetryConfig{})
	if err != nil || r.Platform() != "test" {
		t.Fatalf("NewRetrier = %v, %v", r, err)
	}
}

// TestRetrierDefaultSleep runs the real timer-based sleep and jitter in a synctest bubble,
// where time only advances when every goroutine is blocked: no real waiting.
func TestRetrierDefaultSleep(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := &scriptedSender{script: map[string][]push.Result{"a": {rateLimited(5 * time.Second), delivered}}}
		r, err := push.NewRetrier(s, push.RetryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, err := r.Send(t.Context(), push.Message{Title: "t"}, []string{"a"})
		if err != nil || res[0].Outcome != push.Delivered {
			t.Fatalf("Send = %+v, %v", res, err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("waited %s, want the 5s Retry-After", waited)
		}

		// Cancelling during the wait returns at once.
		s2 := &scriptedSender{script: map[string][]push.Result{"a": {rateLimited(20 * time.Second)}}}
		r2, _ := push.NewRetrier(s2, push.RetryConfig{})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start = time.Now()
		_, err = r2.Send(ctx, push.Message{Title: "t"}, []string{"a"})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("Send = %v after %s, want DeadlineExceeded after 1s", err, time.Since(start))
		}

		// Default jitter keeps backoff within [d/2, d].
		s3 := &scriptedSender{script: map[string][]push.Result{"a": {unavailable, delivered}}}
		r3, _ := push.NewRetrier(s3, push.RetryConfig{BaseDelay: time.Second, MaxDelay: time.Second})
		start = time.Now()
		if _, err := r3.Send(t.Context(), push.Message{Title: "t"}, []string{"a"}); err != nil {
			t.Fatal(err)
		}
		if w := time.Since(start); w < 500*time.Millisecond || w > time.Second {
			t.Errorf("jittered wait %s outside [500ms, 1s]", w)
		}
	})
}
