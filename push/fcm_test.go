package push_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

// fcmConfig is the config of an FCM sender of the app whose credentials c are.
func fcmConfig(c sandbox.Credentials) push.FCMConfig {
	return push.FCMConfig{ProjectID: c.ProjectID, CredentialsJSON: c.ServiceAccountJSON, Endpoint: c.FCMEndpoint}
}

// mustFCM returns the FCM sender of cfg, closed when the test ends.
func mustFCM(t *testing.T, cfg push.FCMConfig) *push.FCM {
	t.Helper()
	f, err := push.NewFCM(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewFCM: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// newFCM returns an FCM sender of the sandbox's first app.
func newFCM(t *testing.T, sb *sandbox.Server) push.Sender {
	return mustFCM(t, fcmConfig(sb.Credentials()))
}

func startSandbox(t *testing.T) *sandbox.Server {
	t.Helper()
	sb, err := sandbox.Start(t.Context(), sandbox.Config{})
	if err != nil {
		t.Fatalf("start sandbox: %v", err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	return sb
}

// TestFCMAndroidAndAPNsFields checks the FCM-only mapping: the Android tag and priority, the
// TTL, and the APNs headers for iOS devices reached through FCM.
func TestFCMAndroidAndAPNsFields(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	s := newFCM(t, sb)
	tok := sandbox.NewDeviceToken(sandbox.PlatformFCM)
	msg := push.Message{Title: "t", Body: "b", CollapseKey: "conv-1", Badge: 0, TTL: 90 * time.Minute}
	if _, err := s.Send(t.Context(), msg, []string{tok}); err != nil {
		t.Fatal(err)
	}
	ds := sb.DeliveriesTo(tok)
	if len(ds) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(ds))
	}
	d := ds[0]
	if d.Tag != "conv-1" || d.Priority != "high" || d.TTL != "5400s" || d.PushType != "alert" {
		t.Errorf("delivery tag %q priority %q ttl %q push type %q; want conv-1, high, 5400s, alert", d.Tag, d.Priority, d.TTL, d.PushType)
	}
	if d.Badge == nil || *d.Badge != 0 {
		t.Errorf("badge = %v, want 0 (clears the badge)", d.Badge)
	}
	if d.Data != nil {
		t.Errorf("data = %v, want none", d.Data)
	}
}

func TestFCMBadgeLeftUnchanged(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	s := newFCM(t, sb)
	tok := sandbox.NewDeviceToken(sandbox.PlatformFCM)
	if _, err := s.Send(t.Context(), push.Message{Title: "t", Badge: -1}, []string{tok}); err != nil {
		t.Fatal(err)
	}
	if d := sb.DeliveriesTo(tok); len(d) != 1 || d[0].Badge != nil {
		t.Errorf("deliveries %+v, want one without badge", d)
	}
}

func TestFCMCredentialsFile(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	dir := t.TempDir()
	if err := sb.WriteCredentials(dir); err != nil {
		t.Fatal(err)
	}
	// No ProjectID: it comes from the service account.
	f := mustFCM(t, push.FCMConfig{
		CredentialsFile: filepath.Join(dir, sandbox.ServiceAccountFile),
		Endpoint:        sb.FCMEndpoint() + "/", // a trailing slash is tolerated
		HTTPClient:      &http.Client{Timeout: 5 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()},
	})
	deliversOne(t, f)
}

func TestNewFCMRejectsBadConfig(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	good := sb.Credentials().ServiceAccountJSON
	missing := filepath.Join(t.TempDir(), "nope.json")
	userCreds := []byte(`{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}`)
	noProject := []byte(`{"type":"service_account","client_email":"a@b","private_key":"k"}`)
	for name, cfg := range map[string]push.FCMConfig{
		"no credentials":     {ProjectID: "p"},
		"both credentials":   {ProjectID: "p", CredentialsJSON: good, CredentialsFile: "x"},
		"missing file":       {ProjectID: "p", CredentialsFile: missing},
		"not json":           {ProjectID: "p", CredentialsJSON: []byte("{")},
		"not a service acct": {ProjectID: "p", CredentialsJSON: userCreds},
		"no project":         {CredentialsJSON: noProject},
		"bad endpoint":       {CredentialsJSON: good, Endpoint: "fcm.example:443"},
	} {
		if _, err := push.NewFCM(t.Context(), cfg); !errors.Is(err, push.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// TestFCMSendAfterConstructorContextEnds shows that the ctx of NewFCM is used only while
// constructing: later token fetches do not inherit its cancellation.
func TestFCMSendAfterConstructorContextEnds(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	ctx, cancel := context.WithCancel(t.Context())
	c := sb.Credentials()
	f, err := push.NewFCM(ctx, push.FCMConfig{CredentialsJSON: c.ServiceAccountJSON, Endpoint: c.FCMEndpoint})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	deliversOne(t, f)
}

// TestFCMNetworkErrorIsRetry points the sender at a closed port.
func TestFCMNetworkErrorIsRetry(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	cfg := fcmConfig(sb.Credentials())
	cfg.HTTPClient = &http.Client{Transport: tr}
	s := mustFCM(t, cfg)
	tok := sandbox.NewDeviceToken(sandbox.PlatformFCM)
	// Get a token while the sandbox is up, so the failure is on the send itself.
	if _, err := s.Send(t.Context(), push.Message{Title: "warm"}, []string{tok}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	// The warm-up's connection, kept for the next send, is closed by the sandbox; the
	// transport may not have noticed yet, and a request written to it before it does gets
	// no answer (unknown, not this test's case). The send below dials.
	tr.CloseIdleConnections()
	// The SDK retries a refused connection itself (0+1+2+4s); a short deadline cuts that.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	res, err := s.Send(ctx, push.Message{Title: "t"}, []string{tok})
	if len(res) != 1 || res[0].Outcome != push.Retry {
		t.Fatalf("Send to a closed sandbox = %+v, %v; want Retry", res, err)
	}
	if res[0].Reason != push.ReasonNetwork && res[0].Reason != push.ReasonCanceled {
		t.Errorf("reason = %q, want network or canceled", res[0].Reason)
	}
}

func TestFCMCredentialsFileIsRead(t *testing.T) {
	t.Parallel()
	// WriteCredentials gives the service account 0600, the env file names it.
	sb := startSandbox(t)
	dir := t.TempDir()
	if err := sb.WriteCredentials(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, sandbox.ServiceAccountFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("service account mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestFCMAnswerAfterTimeoutIsUnknown: the sandbox delivers and answers after the client's
// timeout. The outcome is Unknown (timeout), and the Retrier does not send again.
func TestFCMAnswerAfterTimeoutIsUnknown(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	cfg := fcmConfig(sb.Credentials())
	cfg.HTTPClient = &http.Client{Timeout: 500 * time.Millisecond}
	f := mustFCM(t, cfg)
	expectUnknownOnce(t, sb, f, sandbox.PlatformFCM)
}

// expectUnknownOnce sends through a Retrier to a token whose answer the sandbox holds
// for 3 s, past the sender's timeout: one delivery, outcome Unknown (timeout).
func expectUnknownOnce(t *testing.T, sb *sandbox.Server, s push.Sender, platform string) {
	t.Helper()
	tok := sandbox.NewDeviceToken(platform)
	if err := sb.InjectFault(sandbox.Fault{Token: tok, Kind: sandbox.FaultLostAnswer, StallMS: 3000}); err != nil {
		t.Fatal(err)
	}
	r, err := push.NewRetrier(s, push.RetryConfig{BaseDelay: time.Millisecond, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Send(t.Context(), push.Message{Title: "t"}, []string{tok})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Outcome != push.Unknown || res[0].Reason != push.ReasonTimeout {
		t.Errorf("result %+v, want Unknown timeout", res[0])
	}
	if n := len(sb.DeliveriesTo(tok)); n != 1 {
		t.Errorf("%d deliveries, want 1", n)
	}
}

// retrying wraps s in a Retrier of attempts attempts whose waits end at once.
func retrying(t *testing.T, s push.Sender, attempts int) push.Sender {
	t.Helper()
	r, err := push.NewRetrier(s, push.RetryConfig{MaxAttempts: attempts,
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFCMKeepsConnectionsOpen: the sandbox's FCM endpoint is HTTP/1.1, where each request in
// flight has a connection of its own. Sends as many at once as the worker's default
// -push-concurrency, round after round, reuse the connections of the first round instead of
// dialling one for most requests (Go's default transport keeps only 2 idle ones a host).
func TestFCMKeepsConnectionsOpen(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	s := newFCM(t, sb)
	const concurrency, rounds = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for range concurrency {
		wg.Go(func() {
			for range rounds {
				r, err := s.Send(t.Context(), push.Message{Title: "t", Body: "b"}, []string{sandbox.NewDeviceToken(sandbox.PlatformFCM)})
				if err == nil && r[0].Outcome != push.Delivered {
					err = fmt.Errorf("outcome %v (%s)", r[0].Outcome, r[0].Reason)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := sb.Stats()
	if st.FCM.Delivered != concurrency*rounds {
		t.Fatalf("delivered %d, want %d", st.FCM.Delivered, concurrency*rounds)
	}
	// About one connection a send in flight: a send that comes before an answered one's
	// connection is back in the pool dials another, which then stays too.
	if limit := 2 * concurrency; st.FCM.Connections > limit {
		t.Errorf("%d connections for %d sends, %d at once: want at most %d", st.FCM.Connections, concurrency*rounds, concurrency, limit)
	}
	if st.FCM.Connections == 0 {
		t.Error("the sandbox counted no connection")
	}
	t.Logf("%d connections for %d sends, %d at once", st.FCM.Connections, concurrency*rounds, concurrency)
}

// TestFCMMessageTheSDKRejects: a message that firebase-admin-go refuses before sending it
// (title arguments without a title key) fails the whole call with ErrInvalidMessage, sent to
// one token (Send) as to several (SendEach), and reaches no provider.
func TestFCMMessageTheSDKRejects(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	s := newFCM(t, sb)
	msg := push.Message{Body: "b", BodyLocKey: "body_key", TitleLocArgs: []string{"Ana"}}
	for _, n := range []int{1, 2} {
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = sandbox.NewDeviceToken(sandbox.PlatformFCM)
		}
		res, err := s.Send(t.Context(), msg, tokens)
		if !errors.Is(err, push.ErrInvalidMessage) || res != nil {
			t.Errorf("%d tokens: Send = %v, %v; want nil, ErrInvalidMessage", n, res, err)
		}
	}
	if st := sb.Stats(); st.FCM.Requests != 0 {
		t.Errorf("sandbox saw %d send requests, want 0", st.FCM.Requests)
	}
}

// BenchmarkFCMSend: one reminder-sized push (title, body, a reminder's data, badge, collapse
// key and thread) through push.FCM to the sandbox, 64 in flight as the worker has; the
// sandbox's share of the CPU and allocations is in the figures too.
func BenchmarkFCMSend(b *testing.B) {
	sb, err := sandbox.Start(b.Context(), sandbox.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer sb.Close()
	f, err := push.NewFCM(b.Context(), fcmConfig(sb.Credentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	msg := push.Message{Title: "Ana", Body: "are you coming?", ConversationID: "c-42", CollapseKey: "c-42", ThreadID: "c-42", Badge: 3,
		Data: map[string]string{"episode": "1796533647639-16", "stage": "1", "unread": "3", "message": "m-9", "conversation": "c-42"}}
	token := sandbox.NewDeviceToken(sandbox.PlatformFCM)
	b.SetParallelism(32) // 64 goroutines on this 2-core machine's GOMAXPROCS
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r, err := f.Send(b.Context(), msg, []string{token}); err != nil || r[0].Outcome != push.Delivered {
				b.Errorf("send: %+v, %v", r, err)
				return
			}
		}
	})
}
