package report

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// sessionCookie holds a signed-in browser's session: "<unix expiry>.<hex
// HMAC-SHA256 of the expiry under a key derived from the token>".
const sessionCookie = "nudge_report_session"

// sessionTTL is how long a browser stays signed in with the token.
const sessionTTL = 12 * time.Hour

// auth checks the credentials of a request: a bearer token, basic auth,
// or a session cookie that POST /login set for the token. Secrets are
// compared as SHA-256 digests with subtle.ConstantTimeCompare, so neither
// their content nor their length leaks through timing.
type auth struct {
	token      bool
	tokenSum   [32]byte
	basic      bool
	userSum    [32]byte
	passSum    [32]byte
	sessionKey []byte
	now        func() time.Time
}

func newAuth(token, basicUser, basicPassword string, now func() time.Time) *auth {
	a := &auth{now: now}
	if token != "" {
		a.token = true
		a.tokenSum = sha256.Sum256([]byte(token))
		k := hmac.New(sha256.New, []byte(token))
		k.Write([]byte("nudge report session key v1"))
		a.sessionKey = k.Sum(nil)
	}
	if basicUser != "" || basicPassword != "" {
		a.basic = true
		a.userSum = sha256.Sum256([]byte(basicUser))
		a.passSum = sha256.Sum256([]byte(basicPassword))
	}
	return a
}

// enabled reports whether any credential is configured.
func (a *auth) enabled() bool { return a.token || a.basic }

func equalDigest(secret string, want [32]byte) bool {
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// checkToken reports whether token is the configured token.
func (a *auth) checkToken(token string) bool {
	return a.token && equalDigest(token, a.tokenSum)
}

// allowed reports whether r carries valid credentials (always true when
// none are configured).
func (a *auth) allowed(r *http.Request) bool {
	if !a.enabled() {
		return true
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			return a.checkToken(strings.TrimSpace(cred))
		case strings.EqualFold(scheme, "Basic") && a.basic:
			user, pass, ok := r.BasicAuth()
			// Both comparisons run, whichever fails.
			u, p := equalDigest(user, a.userSum), equalDigest(pass, a.passSum)
			return ok && u && p
		}
		return false
	}
	if c, err := r.Cookie(sessionCookie); err == nil && a.token {
		return a.validSession(c.Value)
	}
	return false
}

func (a *auth) sign(expiry string) string {
	m := hmac.New(sha256.New, a.sessionKey)
	m.Write([]byte(expiry))
	return hex.EncodeToString(m.Sum(nil))
}

// newSession returns a session cookie value valid for sessionTTL.
func (a *auth) newSession() string {
	expiry := strconv.FormatInt(a.now().Add(sessionTTL).Unix(), 10)
	return expiry + "." + a.sign(expiry)
}

func (a *auth) validSession(v string) bool {
	expiry, mac, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	if !hmac.Equal([]byte(mac), []byte(a.sign(expiry))) {
		return false
	}
	unix, err := strconv.ParseInt(expiry, 10, 64)
	return err == nil && a.now().Unix() < unix
}

// challenge writes the 401 of a request without valid credentials. A
// browser navigating to a page is sent to the sign-in form when a token is
// configured; other requests get a JSON error and, with basic auth
// configured, the challenge that makes a browser ask for it.
func (a *auth) challenge(w http.ResponseWriter, r *http.Request) {
	if a.token && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") &&
		r.Header.Get("Authorization") == "" {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	if a.basic {
		w.Header().Set("WWW-Authenticate", `Basic realm="Nudge reports", charset="UTF-8"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="Nudge reports"`)
	}
	writeError(w, http.StatusUnauthorized, "", "authentication required: send Authorization: Bearer <token> or basic auth")
}

// isLoopbackHost reports whether host (of a listen address) is only
// reachable from this machine: "localhost" or a loopback IP. An empty host
// (every interface) and other names are not.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	host, _, _ = strings.Cut(host, "%") // IPv6 zone
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
