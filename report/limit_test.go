package report_test

import (
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/internal/testclock"
	"github.com/nudgehq/nudge/report"
)

// try sends one request presenting a credential in the way named: a
// bearer token, basic auth (the token as password) or the sign-in form.
// It returns the status and Retry-After.
func try(t *testing.T, base, way, secret string, header ...string) (int, int) {
	t.Helper()
	var req *http.Request
	switch way {
	case "login":
		req, _ = http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"token": {secret}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case "basic":
		req, _ = http.NewRequest(http.MethodGet, base+"/api/metrics", nil)
		req.SetBasicAuth(testUser, secret)
	default:
		req, _ = http.NewRequest(http.MethodGet, base+"/api/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	retry, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	return res.StatusCode, retry
}

// Guessing credentials is slowed down per client address: after
// AuthFailureLimit failures each further failure makes the address wait
// longer (429 with Retry-After), and while it waits even the right
// credential is not checked. The same for bearer tokens, basic auth and
// the sign-in form; counted in nudge_report_auth_failures_total and
// nudge_report_auth_limited_total.
func TestAuthFailuresAreLimited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, way := range []string{"bearer", "basic", "login"} {
		t.Run(way, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			clk := testclock.New(time.Now())
			cfg := report.ServerConfig{Token: testToken, BasicUser: testUser, BasicPassword: testToken, Now: clk.Now, Metrics: reg}
			_, ts := b.server(t, cfg)
			ok := http.StatusOK
			if way == "login" {
				ok = http.StatusSeeOther
			}
			bad := http.StatusUnauthorized

			// 200 wrong guesses, then the right one.
			var limited, checked int
			for i := range 200 {
				code, retry := try(t, ts.URL, way, "guess-"+strconv.Itoa(i)+"-0123456789")
				switch code {
				case bad:
					checked++
					if limited > 0 {
						t.Fatalf("guess %d: %d after being limited, with no time passing", i, code)
					}
				case http.StatusTooManyRequests:
					limited++
					if retry < 1 {
						t.Fatalf("guess %d: 429 with Retry-After %d", i, retry)
					}
				default:
					t.Fatalf("guess %d: %d", i, code)
				}
			}
			if checked != report.DefaultAuthFailureLimit+1 || limited != 200-checked {
				t.Errorf("of 200 guesses %d were checked and %d limited, want %d and the rest", checked, limited, report.DefaultAuthFailureLimit+1)
			}
			if code, _ := try(t, ts.URL, way, testToken); code != http.StatusTooManyRequests {
				t.Errorf("the right credential after 200 guesses = %d, want 429", code)
			}

			// Each further failure doubles the wait.
			var waits []int
			for range 4 {
				_, retry := try(t, ts.URL, way, testToken)
				clk.Add(time.Duration(retry) * time.Second)
				code, _ := try(t, ts.URL, way, "wrong-guess-0123456789")
				if code != bad {
					t.Fatalf("a guess after waiting %ds = %d, want it checked (401)", retry, code)
				}
				waits = append(waits, retry)
			}
			for i := 1; i < len(waits); i++ {
				if waits[i] < 2*waits[i-1] {
					t.Errorf("waits %v do not grow", waits)
				}
			}
			_, retry := try(t, ts.URL, way, testToken)
			clk.Add(time.Duration(retry) * time.Second)
			if code, _ := try(t, ts.URL, way, testToken); code != ok {
				t.Errorf("the right credential after waiting = %d, want %d", code, ok)
			}

			if got := counterValue(t, reg, "nudge_report_auth_failures_total", "method", way); got != float64(checked+4) {
				t.Errorf("nudge_report_auth_failures_total{method=%q} = %v, want %d", way, got, checked+4)
			}
			if got := counterValue(t, reg, "nudge_report_auth_limited_total", "method", way); got < float64(limited+1) {
				t.Errorf("nudge_report_auth_limited_total{method=%q} = %v, want at least %d", way, got, limited+1)
			}
		})
	}
}

// counterValue returns the value of a counter vector's series with one
// label in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// The client is the TCP peer: X-Forwarded-For counts only when the peer is
// a trusted proxy, and then its rightmost untrusted address is the client.
func TestAuthLimitClientAddress(t *testing.T) {
	t.Parallel()
	b := setup(t)
	block := func(t *testing.T, base string, header ...string) {
		t.Helper()
		for range report.DefaultAuthFailureLimit + 1 {
			try(t, base, "bearer", "wrong-guess-0123456789", header...)
		}
		if code, _ := try(t, base, "bearer", testToken, header...); code != http.StatusTooManyRequests {
			t.Fatalf("after the guesses: %d, want 429", code)
		}
	}
	xff := func(v string) []string { return []string{"X-Forwarded-For", v} }

	t.Run("untrusted", func(t *testing.T) {
		t.Parallel()
		_, ts := b.server(t, report.ServerConfig{Token: testToken})
		block(t, ts.URL, xff("203.0.113.7")...)
		// A forged header does not make another client.
		if code, _ := try(t, ts.URL, "bearer", testToken, xff("203.0.113.8")...); code != http.StatusTooManyRequests {
			t.Errorf("another X-Forwarded-For from an untrusted peer = %d, want 429 (the peer is the client)", code)
		}
	})
	t.Run("trusted proxy", func(t *testing.T) {
		t.Parallel()
		_, ts := b.server(t, report.ServerConfig{Token: testToken, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		block(t, ts.URL, xff("198.51.100.1, 203.0.113.7")...)
		for _, h := range []string{"203.0.113.8", "203.0.113.7, 203.0.113.8", "2001:db8::1"} {
			if code, _ := try(t, ts.URL, "bearer", testToken, xff(h)...); code != http.StatusOK {
				t.Errorf("X-Forwarded-For %s through the trusted proxy = %d, want 200 (another client)", h, code)
			}
		}
		for _, h := range []string{"203.0.113.7", "198.51.100.99, 203.0.113.7", "203.0.113.7, 127.0.0.1"} {
			if code, _ := try(t, ts.URL, "bearer", testToken, xff(h)...); code != http.StatusTooManyRequests {
				t.Errorf("X-Forwarded-For %s through the trusted proxy = %d, want 429 (the blocked client)", h, code)
			}
		}
		// IPv6 clients are counted by /64: a client owns one.
		block(t, ts.URL, xff("2001:db8:1:2::1")...)
		if code, _ := try(t, ts.URL, "bearer", testToken, xff("2001:db8:1:2::ffff")...); code != http.StatusTooManyRequests {
			t.Errorf("another address of the blocked /64 = %d, want 429", code)
		}
	})
}

// The limiter remembers a bounded number of addresses, and forgets an
// address an hour after its last failure.
func TestAuthLimitMemoryBounded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	clk := testclock.New(time.Now())
	srv, ts := b.server(t, report.ServerConfig{Token: testToken, Now: clk.Now, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	srv.SetAuthLimiterCap(50)
	for i := range 300 {
		try(t, ts.URL, "bearer", "wrong-guess-0123456789", "X-Forwarded-For", netip.AddrFrom4([4]byte{198, 51, byte(i / 256), byte(i)}).String())
	}
	if n := srv.AuthLimiterEntries(); n != 50 {
		t.Errorf("after 300 addresses failed once: %d remembered, want the cap, 50", n)
	}
	clk.Add(61 * time.Minute)
	try(t, ts.URL, "bearer", "wrong-guess-0123456789", "X-Forwarded-For", "192.0.2.1")
	if n := srv.AuthLimiterEntries(); n != 1 {
		t.Errorf("an hour later: %d remembered, want 1 (the old ones forgotten)", n)
	}
}
