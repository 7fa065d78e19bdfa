// Package pushtest holds the conformance suite every push.Sender passes against the push
// sandbox, through the provider's real client library.
//
// The suite is one file, over 400 lines on purpose: its cases are a table to be read
// against the Sender contract (push.Sender) from top to bottom.
package pushtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

// Features is what the suite expects of a sender where senders differ: the
// platform's own answers, and whether the sender tries transient failures
// again itself.
type Features struct {
	// Platform is push.PlatformFCM or push.PlatformAPNs.
	Platform string
	// WrongSender is the reason of a token registered to another sender
	// (FCM: another project's; APNs: another topic's).
	WrongSender string
	// Attempts is how many requests the sender makes for a token that keeps
	// failing transiently before it returns Retry: 1 for a bare sender, a
	// push.Retrier's MaxAttempts.
	Attempts int
	// requests counts the sandbox's send requests for the platform.
	requests func(sandbox.Stats) int
}

// FCM and APNs are the features of the bare senders of each platform.
var (
	FCM = Features{Platform: push.PlatformFCM, WrongSender: push.ReasonSenderIDMismatch, Attempts: 1,
		requests: func(s sandbox.Stats) int { return s.FCM.Requests }}
	APNs = Features{Platform: push.PlatformAPNs, WrongSender: push.ReasonTokenNotForTopic, Attempts: 1,
		requests: func(s sandbox.Stats) int { return s.APNs.Requests }}
)

// Retrying returns f for the sender wrapped in a push.Retrier of
// MaxAttempts attempts, as the worker runs it.
func (f Features) Retrying(attempts int) Features {
	f.Attempts = attempts
	return f
}

// RunConformance runs the suite for a Sender with features f (FCM, APNs,
// or either Retrying). newSender returns a sender that uses sb's current
// credentials and endpoints; it registers its own cleanup with t. Every
// subtest runs in parallel with its own sandbox.
func RunConformance(t *testing.T, f Features, newSender func(t *testing.T, sb *sandbox.Server) push.Sender) {
	t.Helper()
	if f.requests == nil || f.Attempts < 1 {
		t.Fatalf("features %+v: start from pushtest.FCM or pushtest.APNs", f)
	}
	platform := f.Platform
	requests := func(sb *sandbox.Server) int { return f.requests(sb.Stats()) }

	type bundle struct {
		sb     *sandbox.Server
		sender push.Sender
		ctx    context.Context
	}
	setup := func(t *testing.T) *bundle {
		t.Helper()
		sb, err := sandbox.Start(t.Context(), sandbox.Config{})
		if err != nil {
			t.Fatalf("start sandbox: %v", err)
		}
		t.Cleanup(func() { _ = sb.Close() })
		sender := newSender(t, sb)
		if got := sender.Platform(); got != platform {
			t.Fatalf("Platform() = %q, want %q", got, platform)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		t.Cleanup(cancel)
		return &bundle{sb: sb, sender: sender, ctx: ctx}
	}
	tokens := func(n int) []string {
		ts := make([]string, n)
		for i := range ts {
			ts[i] = sandbox.NewDeviceToken(platform)
		}
		return ts
	}
	inject := func(t *testing.T, sb *sandbox.Server, f sandbox.Fault) {
		t.Helper()
		f.Platform = platform
		if err := sb.InjectFault(f); err != nil {
			t.Fatalf("inject fault: %v", err)
		}
	}

	t.Run("DeliveredWithAllFields", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := tokens(1)[0]
		msg := reminder()
		res := mustSend(t, b.ctx, b.sender, msg, []string{tok})
		expectResult(t, res[0], tok, push.Delivered, push.ReasonDelivered)
		if res[0].MessageID == "" || res[0].Err != nil {
			t.Errorf("delivered result: MessageID %q, Err %v", res[0].MessageID, res[0].Err)
		}
		ds := b.sb.DeliveriesTo(tok)
		if len(ds) != 1 {
			t.Fatalf("sandbox got %d deliveries, want 1", len(ds))
		}
		d := ds[0]
		checks := []struct{ field, got, want string }{
			{"platform", d.Platform, platform},
			{"title", d.Title, msg.Title},
			{"body", d.Body, msg.Body},
			{"collapse key", d.CollapseKey, msg.CollapseKey},
			{"thread id", d.ThreadID, msg.ThreadID},
			{"sound", d.Sound, msg.Sound},
			{"data conversation_id", d.Data["conversation_id"], msg.ConversationID},
			{"data kind", d.Data["kind"], msg.Data["kind"]},
			{"message id", d.MessageID, res[0].MessageID},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("delivered %s = %q, want %q", c.field, c.got, c.want)
			}
		}
		if d.Badge == nil || *d.Badge != msg.Badge {
			t.Errorf("delivered badge = %v, want %d", d.Badge, msg.Badge)
		}
		if len(d.Data) != 2 {
			t.Errorf("delivered data = %v, want conversation_id and kind only", d.Data)
		}
	})

	t.Run("ResultsInTokenOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ts := tokens(7)
		res := mustSend(t, b.ctx, b.sender, reminder(), ts)
		for i, r := range res {
			expectResult(t, r, ts[i], push.Delivered, push.ReasonDelivered)
		}
		if n := len(b.sb.Deliveries()); n != len(ts) {
			t.Errorf("sandbox got %d deliveries, want %d", n, len(ts))
		}
	})

	t.Run("NoTokens", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		res, err := b.sender.Send(b.ctx, reminder(), nil)
		if err != nil || len(res) != 0 {
			t.Fatalf("Send(no tokens) = %v, %v; want no results, nil", res, err)
		}
	})

	t.Run("EmptyTokenIsInvalid", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ok := tokens(1)[0]
		res := mustSend(t, b.ctx, b.sender, reminder(), []string{"", ok})
		expectResult(t, res[0], "", push.TokenInvalid, push.ReasonEmptyToken)
		expectResult(t, res[1], ok, push.Delivered, push.ReasonDelivered)
	})

	t.Run("TokenInvalid", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			kind   sandbox.FaultKind
			reason string
		}{
			{sandbox.FaultUnregistered, push.ReasonUnregistered},
			{sandbox.FaultBadToken, push.ReasonBadDeviceToken},
			{sandbox.FaultWrongSender, f.WrongSender},
		} {
			t.Run(string(tc.kind), func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				tok := tokens(1)[0]
				inject(t, b.sb, sandbox.Fault{Token: tok, Kind: tc.kind})
				res := mustSend(t, b.ctx, b.sender, reminder(), []string{tok})
				expectResult(t, res[0], tok, push.TokenInvalid, tc.reason)
				if res[0].Err == nil {
					t.Error("TokenInvalid result without Err")
				}
				if n := len(b.sb.Deliveries()); n != 0 {
					t.Errorf("sandbox recorded %d deliveries, want 0", n)
				}
			})
		}
	})

	t.Run("Retryable", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name       string
			fault      sandbox.Fault
			reason     string
			retryAfter time.Duration
		}{
			{"RateLimitedWithRetryAfter", sandbox.Fault{Kind: sandbox.FaultRateLimited, RetryAfterSeconds: 7}, push.ReasonRateLimited, 7 * time.Second},
			{"RateLimited", sandbox.Fault{Kind: sandbox.FaultRateLimited}, push.ReasonRateLimited, 0},
			{"Unavailable", sandbox.Fault{Kind: sandbox.FaultServerError}, push.ReasonUnavailable, 0},
			{"UnavailableWithRetryAfter", sandbox.Fault{Kind: sandbox.FaultServerError, Status: 503, RetryAfterSeconds: 3}, push.ReasonUnavailable, 3 * time.Second},
			{"Internal", sandbox.Fault{Kind: sandbox.FaultServerError, Status: 500}, push.ReasonInternal, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				tok := tokens(1)[0]
				tc.fault.Token = tok
				inject(t, b.sb, tc.fault)
				res := mustSend(t, b.ctx, b.sender, reminder(), []string{tok})
				expectResult(t, res[0], tok, push.Retry, tc.reason)
				if res[0].RetryAfter != tc.retryAfter {
					t.Errorf("RetryAfter = %s, want %s", res[0].RetryAfter, tc.retryAfter)
				}
				// No client library retries behind the Sender's back: one
				// request, or the Retrier's attempts.
				if n := requests(b.sb); n != f.Attempts {
					t.Errorf("sandbox saw %d requests, want %d", n, f.Attempts)
				}
			})
		}
	})

	// A provider that delivers and loses its answer: the outcome is Unknown, never a retry,
	// and the device got the notification once.
	t.Run("LostAnswerIsUnknown", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ts := tokens(2)
		inject(t, b.sb, sandbox.Fault{Token: ts[0], Kind: sandbox.FaultLostAnswer})
		res := mustSend(t, b.ctx, b.sender, reminder(), ts)
		expectResult(t, res[0], ts[0], push.Unknown, push.ReasonAnswerLost)
		expectResult(t, res[1], ts[1], push.Delivered, push.ReasonDelivered)
		for _, tok := range ts {
			if n := len(b.sb.DeliveriesTo(tok)); n != 1 {
				t.Errorf("token %s got %d deliveries, want 1", push.RedactToken(tok), n)
			}
		}
		if n := requests(b.sb); n != 2 {
			t.Errorf("sandbox saw %d requests, want 2: an unknown outcome is not sent again", n)
		}
	})

	t.Run("PartialFailureFailsOnlyThoseTokens", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ts := tokens(6)
		inject(t, b.sb, sandbox.Fault{Token: ts[1], Kind: sandbox.FaultUnregistered})
		inject(t, b.sb, sandbox.Fault{Token: ts[3], Kind: sandbox.FaultServerError})
		inject(t, b.sb, sandbox.Fault{Token: ts[4], Kind: sandbox.FaultRateLimited, RetryAfterSeconds: 2})
		res := mustSend(t, b.ctx, b.sender, reminder(), ts)
		expectResult(t, res[0], ts[0], push.Delivered, push.ReasonDelivered)
		expectResult(t, res[1], ts[1], push.TokenInvalid, push.ReasonUnregistered)
		expectResult(t, res[2], ts[2], push.Delivered, push.ReasonDelivered)
		expectResult(t, res[3], ts[3], push.Retry, push.ReasonUnavailable)
		expectResult(t, res[4], ts[4], push.Retry, push.ReasonRateLimited)
		expectResult(t, res[5], ts[5], push.Delivered, push.ReasonDelivered)
		for i, tok := range ts {
			want := 0
			if res[i].Outcome == push.Delivered {
				want = 1
			}
			if n := len(b.sb.DeliveriesTo(tok)); n != want {
				t.Errorf("token %d: %d deliveries, want %d", i, n, want)
			}
		}
	})

	t.Run("OversizeBodyTruncatedToFit", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := tokens(1)[0]
		msg := reminder()
		msg.Body = strings.Repeat("Grüße aus Köln 😀 ", 400) // ~8 KB, multi-byte runes
		res := mustSend(t, b.ctx, b.sender, msg, []string{tok})
		expectResult(t, res[0], tok, push.Delivered, push.ReasonDelivered)
		ds := b.sb.DeliveriesTo(tok)
		if len(ds) != 1 {
			t.Fatalf("sandbox got %d deliveries, want 1", len(ds))
		}
		d := ds[0]
		if d.PayloadBytes > push.MaxPayloadBytes {
			t.Errorf("payload %d bytes, limit %d", d.PayloadBytes, push.MaxPayloadBytes)
		}
		// Cut to fit, not far below: a few bytes go to rune boundaries and trimmed space.
		if d.PayloadBytes < push.MaxPayloadBytes-16 {
			t.Errorf("payload %d bytes: truncated more than needed", d.PayloadBytes)
		}
		if !utf8.ValidString(d.Body) || !strings.HasSuffix(d.Body, "…") {
			t.Errorf("truncated body is not valid UTF-8 ending in …: %q", tail(d.Body))
		}
		if !strings.HasPrefix(msg.Body, strings.TrimSuffix(d.Body, "…")) {
			t.Errorf("truncated body is not a prefix of the original: %q", tail(d.Body))
		}
		if d.Title != msg.Title {
			t.Errorf("title = %q, want it untouched %q", d.Title, msg.Title)
		}
	})

	t.Run("DataTooLargeFails", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		tok := tokens(1)[0]
		msg := reminder()
		msg.Data = map[string]string{"blob": strings.Repeat("x", push.MaxPayloadBytes)}
		res := mustSend(t, b.ctx, b.sender, msg, []string{tok})
		expectResult(t, res[0], tok, push.Failed, push.ReasonPayloadTooLarge)
		if !errors.Is(res[0].Err, push.ErrPayloadTooLarge) {
			t.Errorf("Err = %v, want ErrPayloadTooLarge", res[0].Err)
		}
		if n := requests(b.sb); n != 0 {
			t.Errorf("sandbox saw %d requests, want 0", n)
		}
	})

	t.Run("InvalidMessage", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, msg := range []push.Message{
			{},
			{Title: "t", CollapseKey: strings.Repeat("k", 65)},
			{Title: "t", Data: map[string]string{"google.x": "1"}},
			{Title: "t", TTL: -time.Second},
		} {
			res, err := b.sender.Send(b.ctx, msg, tokens(1))
			if !errors.Is(err, push.ErrInvalidMessage) || res != nil {
				t.Errorf("Send(%+v) = %v, %v; want nil, ErrInvalidMessage", msg, res, err)
			}
		}
		if n := requests(b.sb); n != 0 {
			t.Errorf("sandbox saw %d requests, want 0", n)
		}
	})

	t.Run("ProviderAuthVerified", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ts := tokens(2)
		res := mustSend(t, b.ctx, b.sender, reminder(), ts[:1])
		expectResult(t, res[0], ts[0], push.Delivered, push.ReasonDelivered)

		// The keys the sender holds are no longer the sandbox's: it must be refused.
		if err := b.sb.RotateCredentials(); err != nil {
			t.Fatal(err)
		}
		res, err := b.sender.Send(b.ctx, reminder(), ts[1:])
		if !errors.Is(err, push.ErrProviderAuth) {
			t.Fatalf("Send with a rotated key: err = %v, want ErrProviderAuth", err)
		}
		if len(res) != 1 {
			t.Fatalf("got %d results, want 1", len(res))
		}
		expectResult(t, res[0], ts[1], push.Failed, push.ReasonProviderAuth)
		if n := len(b.sb.DeliveriesTo(ts[1])); n != 0 {
			t.Errorf("sandbox delivered %d with a rotated key", n)
		}

		// A sender made with the new keys gets through.
		fresh := newSender(t, b.sb)
		res = mustSend(t, b.ctx, fresh, reminder(), ts[1:])
		expectResult(t, res[0], ts[1], push.Delivered, push.ReasonDelivered)
	})

	t.Run("ProviderAuthVerifiedBeforeFirstUse", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if err := b.sb.RotateCredentials(); err != nil {
			t.Fatal(err)
		}
		tok := tokens(1)[0]
		res, err := b.sender.Send(b.ctx, reminder(), []string{tok})
		if !errors.Is(err, push.ErrProviderAuth) {
			t.Fatalf("Send with a stale key: err = %v, want ErrProviderAuth", err)
		}
		expectResult(t, res[0], tok, push.Failed, push.ReasonProviderAuth)
	})

	t.Run("ContextDone", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(b.ctx)
		cancel()
		_, err := b.sender.Send(ctx, reminder(), tokens(2))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Send(cancelled ctx) err = %v, want context.Canceled", err)
		}
		if n := requests(b.sb); n != 0 {
			t.Errorf("sandbox saw %d requests, want 0", n)
		}
	})

	t.Run("ConcurrentSends", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const senders, perCall = 8, 4
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for range senders {
			wg.Go(func() {
				ts := tokens(perCall)
				res, err := b.sender.Send(b.ctx, reminder(), ts)
				if err != nil {
					errs <- err
					return
				}
				for i, r := range res {
					if r.Outcome != push.Delivered || r.Token != ts[i] {
						errs <- fmt.Errorf("result %d: %s %s for %s", i, r.Outcome, r.Reason, push.RedactToken(r.Token))
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := len(b.sb.Deliveries()); n != senders*perCall {
			t.Errorf("sandbox got %d deliveries, want %d", n, senders*perCall)
		}
	})

	// How a Retrier wraps this sender, step by step (a sender that retries
	// itself was run through the rest of the suite as it is).
	t.Run("Retrier", func(t *testing.T) {
		t.Parallel()
		if f.Attempts > 1 {
			t.Skip("the sender retries itself")
		}
		b := setup(t)
		spy := &spySender{Sender: b.sender}
		var sleeps []time.Duration
		r, err := push.NewRetrier(spy, push.RetryConfig{
			Jitter: func(d time.Duration) time.Duration { return d },
			Sleep: func(ctx context.Context, d time.Duration) error {
				sleeps = append(sleeps, d) // the Retrier sleeps on the calling goroutine
				return ctx.Err()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ts := tokens(6)
		inject(t, b.sb, sandbox.Fault{Token: ts[1], Kind: sandbox.FaultRateLimited, Times: 1, RetryAfterSeconds: 2})
		inject(t, b.sb, sandbox.Fault{Token: ts[2], Kind: sandbox.FaultServerError, Times: 2})
		inject(t, b.sb, sandbox.Fault{Token: ts[3], Kind: sandbox.FaultUnregistered})
		inject(t, b.sb, sandbox.Fault{Token: ts[4], Kind: sandbox.FaultRateLimited, RetryAfterSeconds: 60})
		inject(t, b.sb, sandbox.Fault{Token: ts[5], Kind: sandbox.FaultServerError})

		res, err := r.Send(b.ctx, reminder(), ts)
		if err != nil {
			t.Fatalf("Retrier.Send: %v", err)
		}
		expectResult(t, res[0], ts[0], push.Delivered, push.ReasonDelivered)
		expectResult(t, res[1], ts[1], push.Delivered, push.ReasonDelivered)
		expectResult(t, res[2], ts[2], push.Delivered, push.ReasonDelivered)
		expectResult(t, res[3], ts[3], push.TokenInvalid, push.ReasonUnregistered)
		expectResult(t, res[4], ts[4], push.Retry, push.ReasonRateLimited)
		expectResult(t, res[5], ts[5], push.Retry, push.ReasonUnavailable)
		if res[4].RetryAfter != time.Minute {
			t.Errorf("given-up token RetryAfter = %s, want 1m", res[4].RetryAfter)
		}

		// Each device got the reminder exactly once.
		for i, tok := range ts[:3] {
			if n := len(b.sb.DeliveriesTo(tok)); n != 1 {
				t.Errorf("token %d: %d deliveries, want exactly 1", i, n)
			}
		}
		// Only failed tokens were sent again; the over-long Retry-After one never was.
		wantCalls := map[string]int{ts[0]: 1, ts[1]: 2, ts[2]: 3, ts[3]: 1, ts[4]: 1, ts[5]: 4}
		for i, tok := range ts {
			if got := spy.calls(tok); got != wantCalls[tok] {
				t.Errorf("token %d sent %d times, want %d", i, got, wantCalls[tok])
			}
		}
		// First wait honours the 2s Retry-After over the 200ms backoff; then 400ms, 800ms.
		wantSleeps := []time.Duration{2 * time.Second, 400 * time.Millisecond, 800 * time.Millisecond}
		if fmt.Sprint(sleeps) != fmt.Sprint(wantSleeps) {
			t.Errorf("sleeps = %v, want %v", sleeps, wantSleeps)
		}
	})
}

// reminder is a message with every field set.
func reminder() push.Message {
	return push.Message{
		Title:          "Ada Lovelace",
		Body:           "3 new messages in #engines",
		ConversationID: "conv-42",
		CollapseKey:    "conv-42",
		ThreadID:       "conv-42",
		Badge:          7,
		Data:           map[string]string{"kind": "unread_reminder"},
		Sound:          "default",
		TTL:            time.Hour,
	}
}

func mustSend(t *testing.T, ctx context.Context, s push.Sender, msg push.Message, tokens []string) []push.Result {
	t.Helper()
	res, err := s.Send(ctx, msg, tokens)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(res) != len(tokens) {
		t.Fatalf("Send returned %d results for %d tokens", len(res), len(tokens))
	}
	return res
}

func expectResult(t *testing.T, r push.Result, token string, outcome push.Outcome, reason string) {
	t.Helper()
	if r.Token != token || r.Outcome != outcome || r.Reason != reason {
		t.Errorf("result for %s = {token %s, %s, %s, err %v}, want {%s, %s}",
			push.RedactToken(token), push.RedactToken(r.Token), r.Outcome, r.Reason, r.Err, outcome, reason)
	}
}

func tail(s string) string {
	if len(s) <= 40 {
		return s
	}
	return "…" + s[len(s)-40:]
}

// spySender counts how many times each token was sent to.
type spySender struct {
	push.Sender
	mu     sync.Mutex
	counts map[string]int
}

func (s *spySender) Send(ctx context.Context, msg push.Message, tokens []string) ([]push.Result, error) {
	s.mu.Lock()
	if s.counts == nil {
		s.counts = make(map[string]int)
	}
	for _, t := range tokens {
		s.counts[t]++
	}
	s.mu.Unlock()
	return s.Sender.Send(ctx, msg, tokens)
}

func (s *spySender) calls(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[token]
}
