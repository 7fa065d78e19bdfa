package report_test

import (
	"context"
	"net/http"
	"testing"

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
