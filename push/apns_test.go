package push_test

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sideshow/apns2"

	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

// apnsConfig is the config of an APNs sender of the app whose credentials c are.
func apnsConfig(c sandbox.Credentials) push.APNsConfig {
	return push.APNsConfig{KeyP8: c.APNsKeyP8, KeyID: c.APNsKeyID, TeamID: c.APNsTeamID, Topic: c.APNsTopic,
		Host: c.APNsHost, RootCAs: c.CertPool}
}

// mustAPNs returns the APNs sender of cfg, closed when the test ends.
func mustAPNs(t *testing.T, cfg push.APNsConfig) *push.APNs {
	t.Helper()
	a, err := push.NewAPNs(cfg)
	if err != nil {
		t.Fatalf("NewAPNs: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// newAPNs returns an APNs sender of the sandbox's first app whose sends
// have at most 3 requests in flight, below the token counts of the suite,
// so the bound is exercised.
func newAPNs(t *testing.T, sb *sandbox.Server) push.Sender {
	cfg := apnsConfig(sb.Credentials())
	cfg.Concurrency = 3
	return mustAPNs(t, cfg)
}

// TestAPNsHeaders checks the request headers and payload the sandbox received.
func TestAPNsHeaders(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	s := newAPNs(t, sb)
	tok := sandbox.NewDeviceToken(sandbox.PlatformAPNs)
	before := time.Now()
	msg := push.Message{Title: "t", Body: "b", CollapseKey: "conv-9", TTL: time.Hour, Badge: -1}
	if _, err := s.Send(t.Context(), msg, []string{tok}); err != nil {
		t.Fatal(err)
	}
	ds := sb.DeliveriesTo(tok)
	if len(ds) != 1 {
		t.Fatalf("got %d deliveries, want 1", len(ds))
	}
	d := ds[0]
	if d.Topic != sb.Credentials().APNsTopic || d.PushType != "alert" || d.Priority != "10" || d.CollapseKey != "conv-9" {
		t.Errorf("topic %q push type %q priority %q collapse id %q", d.Topic, d.PushType, d.Priority, d.CollapseKey)
	}
	exp, err := strconv.ParseInt(d.TTL, 10, 64)
	if err != nil || exp < before.Add(time.Hour).Unix()-1 || exp > time.Now().Add(time.Hour).Unix()+1 {
		t.Errorf("apns-expiration = %q, want about an hour from now", d.TTL)
	}
	if d.Badge != nil {
		t.Errorf("badge = %d, want none (negative Badge leaves it unchanged)", *d.Badge)
	}
}

// TestAPNsMalformedTokenNotSent: a token that is not hex never reaches the network.
func TestAPNsMalformedTokenNotSent(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	s := newAPNs(t, sb)
	res, err := s.Send(t.Context(), push.Message{Title: "t"}, []string{"not-hex/../../x"})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Outcome != push.TokenInvalid || res[0].Reason != push.ReasonBadDeviceToken {
		t.Errorf("result %+v, want TokenInvalid bad_device_token", res[0])
	}
	if n := sb.Stats().APNs.Requests; n != 0 {
		t.Errorf("sandbox saw %d requests, want 0", n)
	}
}

func TestAPNsUnregisteredCarriesTimestamp(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	s := newAPNs(t, sb)
	tok := sandbox.NewDeviceToken(sandbox.PlatformAPNs)
	if err := sb.InjectFault(sandbox.Fault{Token: tok, Kind: sandbox.FaultUnregistered}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Send(t.Context(), push.Message{Title: "t"}, []string{tok})
	if err != nil {
		t.Fatal(err)
	}
	var apnsErr *push.APNsError
	if !errors.As(res[0].Err, &apnsErr) || apnsErr.Status != 410 || apnsErr.Reason != apns2.ReasonUnregistered || apnsErr.Timestamp.IsZero() {
		t.Errorf("Err = %#v, want a 410 APNsError with a timestamp", res[0].Err)
	}
}

// TestAPNsUntrustedServer: without the sandbox CA the TLS handshake fails, per token.
func TestAPNsUntrustedServer(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	cfg := apnsConfig(sb.Credentials())
	cfg.RootCAs = x509.NewCertPool()
	a := mustAPNs(t, cfg)
	res, err := a.Send(t.Context(), push.Message{Title: "t"}, []string{sandbox.NewDeviceToken(sandbox.PlatformAPNs)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Outcome != push.Retry || res[0].Reason != push.ReasonNetwork {
		t.Errorf("result %+v, want Retry network", res[0])
	}
	if n := sb.Stats().APNs.Requests; n != 0 {
		t.Errorf("sandbox served %d requests over an untrusted connection", n)
	}
}

// TestAPNsKeyAndCAFiles: the key and the CA to trust read from the files the sandbox
// writes, the way the worker's settings name them.
func TestAPNsKeyAndCAFiles(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	dir := t.TempDir()
	if err := sb.WriteCredentials(dir); err != nil {
		t.Fatal(err)
	}
	cfg := apnsConfig(sb.Credentials())
	cfg.KeyP8, cfg.KeyFile = nil, filepath.Join(dir, sandbox.APNsKeyFile)
	cfg.RootCAs, cfg.CAFile = nil, filepath.Join(dir, sandbox.CACertFile)
	cfg.Host += "/" // a trailing slash is tolerated
	a := mustAPNs(t, cfg)
	deliversOne(t, a)
}

func TestNewAPNsRejectsBadConfig(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	c := sb.Credentials()
	valid := push.APNsConfig{KeyP8: c.APNsKeyP8, KeyID: c.APNsKeyID, TeamID: c.APNsTeamID, Topic: c.APNsTopic}
	dir := t.TempDir()
	if err := sb.WriteCredentials(dir); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, sandbox.CACertFile) // a good one: refused only beside RootCAs
	for name, mutate := range map[string]func(*push.APNsConfig){
		"no key":        func(c *push.APNsConfig) { c.KeyP8 = nil },
		"both keys":     func(c *push.APNsConfig) { c.KeyFile = "x.p8" },
		"not pem":       func(c *push.APNsConfig) { c.KeyP8 = []byte("nope") },
		"rsa key":       func(c *push.APNsConfig) { c.KeyP8 = rsaPKCS8(t, sb) },
		"missing file":  func(c *push.APNsConfig) { c.KeyP8, c.KeyFile = nil, filepath.Join(t.TempDir(), "k.p8") },
		"no key id":     func(c *push.APNsConfig) { c.KeyID = "" },
		"no team":       func(c *push.APNsConfig) { c.TeamID = "" },
		"no topic":      func(c *push.APNsConfig) { c.Topic = "" },
		"http host":     func(c *push.APNsConfig) { c.Host = "http://127.0.0.1:1" },
		"host w/ path":  func(c *push.APNsConfig) { c.Host = "https://127.0.0.1:1/3/device" },
		"negative conc": func(c *push.APNsConfig) { c.Concurrency = -1 },
		"missing CA":    func(c *push.APNsConfig) { c.CAFile = filepath.Join(t.TempDir(), "ca.pem") },
		"CA not pem":    func(c *push.APNsConfig) { c.CAFile = "apns.go" },
		"both CAs":      func(c *push.APNsConfig) { c.CAFile, c.RootCAs = caFile, x509.NewCertPool() },
	} {
		cfg := valid
		mutate(&cfg)
		if _, err := push.NewAPNs(cfg); !errors.Is(err, push.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	// The production host is the default.
	if _, err := push.NewAPNs(valid); err != nil {
		t.Errorf("valid config: %v", err)
	}
	valid.CAFile = caFile
	if _, err := push.NewAPNs(valid); err != nil {
		t.Errorf("valid config with a CA file: %v", err)
	}
}

// rsaPKCS8 returns an RSA key in PKCS#8 PEM (the sandbox service account's), which APNs
// refuses: provider tokens are ES256.
func rsaPKCS8(t *testing.T, sb *sandbox.Server) []byte {
	t.Helper()
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(sb.Credentials().ServiceAccountJSON, &sa); err != nil {
		t.Fatal(err)
	}
	return []byte(sa.PrivateKey)
}

// TestAPNsConcurrencyBound: one Send has at most Concurrency requests in flight, and uses
// them (HTTP/2 multiplexes them over one connection).
func TestAPNsConcurrencyBound(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.Start(t.Context(), sandbox.Config{Latency: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	s := newAPNs(t, sb) // Concurrency 3
	toks := make([]string, 12)
	for i := range toks {
		toks[i] = sandbox.NewDeviceToken(sandbox.PlatformAPNs)
	}
	res, err := s.Send(t.Context(), push.Message{Title: "t"}, toks)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Outcome != push.Delivered || r.Token != toks[i] {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	// At most 3; at least 2 shows the requests overlap (3 unless the machine is swamped).
	if got := sb.Stats().APNs.MaxInFlight; got < 2 || got > 3 {
		t.Errorf("max in flight %d, want 3", got)
	}
}

// TestAPNsAnswerAfterTimeoutIsUnknown: as TestFCMAnswerAfterTimeoutIsUnknown, for APNs.
func TestAPNsAnswerAfterTimeoutIsUnknown(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t)
	cfg := apnsConfig(sb.Credentials())
	cfg.Timeout = 500 * time.Millisecond
	a := mustAPNs(t, cfg)
	expectUnknownOnce(t, sb, a, sandbox.PlatformAPNs)
}
