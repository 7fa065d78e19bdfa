package report_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/report"
)

// signOut posts /logout with the session cookie v and returns the status.
func signOut(t *testing.T, base, v string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Cookie", "nudge_report_session="+v)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func wantSession(t *testing.T, what, base, v string, want int) {
	t.Helper()
	if code, _, body := get(t, base+"/api/metrics", sessionCookie(v)...); code != want {
		t.Errorf("%s: GET /api/metrics with the session = %d %.100s, want %d", what, code, body, want)
	}
}

// Signing out ends the session on every server sharing the Redis (another
// replica, or this one restarted), not only in the browser that signed
// out; RevokeAllSessions ends every session at once. The other sessions
// live on until then.
func TestSignOutEndsTheSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := report.ServerConfig{Token: testToken, AdminToken: testAdminToken, Sessions: report.NewRedisSessions(b.rdb, b.ks)}
	_, one := b.server(t, cfg)
	_, two := b.server(t, cfg) // a second replica, or the first one after a restart

	leaving, staying, admin := signIn(t, one.URL, testToken), signIn(t, one.URL, testToken), signIn(t, two.URL, testAdminToken)
	for _, base := range []string{one.URL, two.URL} {
		wantSession(t, "before sign-out", base, leaving, http.StatusOK)
	}
	if code := signOut(t, one.URL, leaving); code != http.StatusSeeOther {
		t.Fatalf("POST /logout = %d, want 303", code)
	}
	for _, base := range []string{one.URL, two.URL} {
		wantSession(t, "signed out", base, leaving, http.StatusUnauthorized)
		wantSession(t, "another reader session", base, staying, http.StatusOK)
		wantSession(t, "an admin session", base, admin, http.StatusOK)
	}

	// A restart: a new server over the same Redis.
	_, three := b.server(t, cfg)
	wantSession(t, "signed out, after a restart", three.URL, leaving, http.StatusUnauthorized)
	wantSession(t, "another session, after a restart", three.URL, staying, http.StatusOK)

	if err := report.RevokeAllSessions(context.Background(), b.rdb, b.ks); err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{one.URL, two.URL, three.URL} {
		wantSession(t, "revoke-all: reader", base, staying, http.StatusUnauthorized)
		wantSession(t, "revoke-all: admin", base, admin, http.StatusUnauthorized)
	}
	// Signing in again works, and bearer tokens never had a session.
	fresh := signIn(t, one.URL, testToken)
	for _, base := range []string{one.URL, two.URL, three.URL} {
		wantSession(t, "a session after revoke-all", base, fresh, http.StatusOK)
		if code, _, _ := get(t, base+"/api/metrics", bearer(testToken)...); code != http.StatusOK {
			t.Errorf("bearer after revoke-all = %d", code)
		}
	}
}

// Without a shared store (no Redis), a sign-out still ends the session on
// the server that saw it.
func TestSignOutWithoutRedis(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, ts := b.server(t, report.ServerConfig{Token: testToken})
	leaving, staying := signIn(t, ts.URL, testToken), signIn(t, ts.URL, testToken)
	if code := signOut(t, ts.URL, leaving); code != http.StatusSeeOther {
		t.Fatalf("POST /logout = %d, want 303", code)
	}
	wantSession(t, "signed out", ts.URL, leaving, http.StatusUnauthorized)
	wantSession(t, "another session", ts.URL, staying, http.StatusOK)
}

// redeem opens a sign-in link (GET /login?code=&next=) without following
// its redirect: it returns the status, the Location, the session cookie
// set, and the page.
func redeem(t *testing.T, base, code, next string) (int, string, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/login?"+url.Values{"code": {code}, "next": {next}}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	cookie := ""
	for _, c := range res.Cookies() {
		if c.Name == "nudge_report_session" && c.Value != "" {
			cookie = c.Value
		}
	}
	return res.StatusCode, res.Header.Get("Location"), cookie, string(body)
}

// A sign-in link signs one browser in, once, on any server sharing the
// Redis, as the role it was made for, and then sends it on to its page;
// used again, expired, or made up, it is refused like a wrong token.
func TestSignInLink(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	cfg := report.ServerConfig{Token: testToken, AdminToken: testAdminToken, Sessions: report.NewRedisSessions(b.rdb, b.ks)}
	_, one := b.server(t, cfg)
	_, two := b.server(t, cfg)

	code, err := report.NewSignInLink(ctx, b.rdb, b.ks, report.RoleAdmin, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	status, loc, cookie, _ := redeem(t, two.URL, code, "/?range=15m&live=1")
	if status != http.StatusSeeOther || loc != "/?range=15m&live=1" || cookie == "" {
		t.Fatalf("a fresh link: %d to %q, cookie %t; want 303 to its page with a session", status, loc, cookie != "")
	}
	wantSession(t, "the link's session", one.URL, cookie, http.StatusOK)
	if !strings.HasPrefix(cookie, "a.") { // the role's letter starts the cookie
		t.Errorf("the link's session is not an admin's: %.2s…", cookie)
	}
	status, _, again, page := redeem(t, one.URL, code, "/")
	if status != http.StatusUnauthorized || again != "" || !strings.Contains(page, "used already or has expired") {
		t.Errorf("the link used twice: %d, cookie %t; want 401 saying it was used", status, again != "")
	}
	if status, _, c, _ := redeem(t, one.URL, "0123456789abcdef0123456789abcdef", "/"); status != http.StatusUnauthorized || c != "" {
		t.Errorf("a made-up code: %d, cookie %t; want 401", status, c != "")
	}
	// Off-site next pages are never followed.
	code, _ = report.NewSignInLink(ctx, b.rdb, b.ks, report.RoleReader, time.Minute)
	if status, loc, _, _ := redeem(t, one.URL, code, "//evil.example/"); status != http.StatusSeeOther || loc != "/" {
		t.Errorf("a link to another site: %d to %q, want 303 to /", status, loc)
	}
	// Expired: its key is gone with its TTL.
	code, _ = report.NewSignInLink(ctx, b.rdb, b.ks, report.RoleReader, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if status, _, c, _ := redeem(t, one.URL, code, "/"); status != http.StatusUnauthorized || c != "" {
		t.Errorf("an expired link: %d, cookie %t; want 401", status, c != "")
	}
	for _, bad := range []time.Duration{0, -time.Second, 25 * time.Hour} {
		if _, err := report.NewSignInLink(ctx, b.rdb, b.ks, report.RoleReader, bad); err == nil {
			t.Errorf("a link living %s was made", bad)
		}
	}

	// A server with no admin token cannot sign a browser in as admin.
	_, readerOnly := b.server(t, report.ServerConfig{Token: testToken, Sessions: report.NewRedisSessions(b.rdb, b.ks)})
	code, _ = report.NewSignInLink(ctx, b.rdb, b.ks, report.RoleAdmin, time.Minute)
	if status, _, c, page := redeem(t, readerOnly.URL, code, "/"); status != http.StatusUnauthorized || c != "" || !strings.Contains(page, "no admin token") {
		t.Errorf("an admin link on a server without an admin token: %d, cookie %t", status, c != "")
	}
	// Without Redis a server takes no links, and says why.
	_, noRedis := b.server(t, report.ServerConfig{Token: testToken})
	if status, _, _, page := redeem(t, noRedis.URL, code, "/"); status != http.StatusServiceUnavailable || !strings.Contains(page, "without Redis") {
		t.Errorf("a link on a server without Redis: %d %.200s", status, page)
	}
}

// Guessing sign-in link codes is limited like guessing tokens: after
// DefaultAuthFailureLimit made-up codes, a client's next attempt, even with
// a good code, gets 429 and the sign-in page saying how long to wait, and
// is counted under method "link".
func TestSignInLinkGuessesAreLimited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := prometheus.NewRegistry()
	_, ts := b.server(t, report.ServerConfig{Token: testToken, Sessions: report.NewRedisSessions(b.rdb, b.ks), Metrics: reg})
	for i := range report.DefaultAuthFailureLimit + 1 {
		if status, _, _, _ := redeem(t, ts.URL, fmt.Sprintf("%032x", i), "/"); status != http.StatusUnauthorized {
			t.Fatalf("made-up code %d: %d, want 401", i, status)
		}
	}
	code, err := report.NewSignInLink(context.Background(), b.rdb, b.ks, report.RoleReader, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	status, _, cookie, page := redeem(t, ts.URL, code, "/")
	if status != http.StatusTooManyRequests || cookie != "" || !strings.Contains(page, "Too many failed sign-ins from your address") {
		t.Errorf("a good code after %d made-up ones: %d, cookie %t, page %.200q; want 429 saying to wait", report.DefaultAuthFailureLimit+1, status, cookie != "", page)
	}
	if got := counterValue(t, reg, "nudge_report_auth_limited_total", "method", "link"); got != 1 {
		t.Errorf(`nudge_report_auth_limited_total{method="link"} = %v, want 1`, got)
	}
}

// Basic auth cannot be signed out of on the server: POST /logout says how
// (close the browser) instead of sending the browser straight back in.
func TestSignOutWithBasicAuthSaysHow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, ts := b.server(t, report.ServerConfig{BasicUser: "ann", BasicPassword: "correct-horse-battery"})
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("ann", "correct-horse-battery")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "close the browser to sign out") {
		t.Errorf("POST /logout with basic auth: %d %.300s; want 200 saying to close the browser", res.StatusCode, body)
	}
}
