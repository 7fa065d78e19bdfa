package report

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Role is what a request's credential lets it do.
type Role uint8

const (
	// RoleNone: no valid credential.
	RoleNone Role = iota
	// RoleReader reads the reports and sees the queues UI read-only. The
	// credentials of ServerConfig.Token and BasicUser give it, and so does
	// a server without credentials (loopback only).
	RoleReader
	// RoleAdmin does what a reader does and changes tasks and queues
	// through the queues UI (unless ServerConfig.QueuesReadOnly). The
	// credentials of ServerConfig.AdminToken and AdminBasicUser give it.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleReader:
		return "reader"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// roleCode is a role's letter in a session cookie.
func (r Role) code() string {
	if r == RoleAdmin {
		return "a"
	}
	return "r"
}

// ParseRole reads "reader" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "reader":
		return RoleReader, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("role %q: want reader or admin", s)
}

func roleOfCode(c string) Role {
	switch c {
	case "a":
		return RoleAdmin
	case "r":
		return RoleReader
	}
	return RoleNone
}

// sessionCookie holds a signed-in browser's session:
// "<role>.<epoch>.<unix expiry>.<id>.<hex HMAC-SHA256 of what precedes it
// under a key derived from the role's token>". The id (128 random bits)
// and the epoch are what Sessions revokes.
const sessionCookie = "nudge_report_session"

// sessionTTL is how long a browser stays signed in with a token.
const sessionTTL = 12 * time.Hour

// tokenCred is a bearer token of a role, and the key that signs the
// sessions it opens.
type tokenCred struct {
	role       Role
	sum        [32]byte
	sessionKey []byte
}

// basicCred is a basic auth user and password of a role.
type basicCred struct {
	role    Role
	userSum [32]byte
	passSum [32]byte
}

// auth checks the credentials of a request: a bearer token, basic auth,
// or a session cookie that POST /login set for a token. Secrets are
// compared as SHA-256 digests with subtle.ConstantTimeCompare, so neither
// their content nor their length leaks through timing; every configured
// credential is compared, whichever matches.
type auth struct {
	tokens   []tokenCred
	basics   []basicCred
	sessions Sessions
	now      func() time.Time
}

func newAuth(cfg ServerConfig) *auth {
	a := &auth{now: cfg.Now, sessions: cfg.Sessions}
	addToken := func(role Role, token string) {
		if token == "" {
			return
		}
		k := hmac.New(sha256.New, []byte(token))
		k.Write([]byte("nudge report session key v3"))
		a.tokens = append(a.tokens, tokenCred{role: role, sum: sha256.Sum256([]byte(token)), sessionKey: k.Sum(nil)})
	}
	addBasic := func(role Role, user, pass string) {
		if user == "" && pass == "" {
			return
		}
		a.basics = append(a.basics, basicCred{role: role, userSum: sha256.Sum256([]byte(user)), passSum: sha256.Sum256([]byte(pass))})
	}
	addToken(RoleReader, cfg.Token)
	addToken(RoleAdmin, cfg.AdminToken)
	addBasic(RoleReader, cfg.BasicUser, cfg.BasicPassword)
	addBasic(RoleAdmin, cfg.AdminBasicUser, cfg.AdminBasicPassword)
	return a
}

// enabled reports whether any credential is configured.
func (a *auth) enabled() bool { return len(a.tokens)+len(a.basics) > 0 }

func (a *auth) hasToken() bool { return len(a.tokens) > 0 }

func (a *auth) hasBasic() bool { return len(a.basics) > 0 }

func equal(sum, want [32]byte) bool {
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// checkToken returns the role of token, RoleNone if it is no configured
// token.
func (a *auth) checkToken(token string) Role {
	sum := sha256.Sum256([]byte(token))
	role := RoleNone
	for _, t := range a.tokens {
		if equal(sum, t.sum) {
			role = t.role
		}
	}
	return role
}

func (a *auth) checkBasic(user, pass string) Role {
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	role := RoleNone
	for _, b := range a.basics {
		// Both comparisons run, whichever fails.
		uok, pok := equal(u, b.userSum), equal(p, b.passSum)
		if uok && pok {
			role = b.role
		}
	}
	return role
}

// How a request presented its credential.
const (
	methodNone    = ""        // none presented
	methodBearer  = "bearer"  // Authorization: Bearer
	methodBasic   = "basic"   // Authorization: Basic
	methodSession = "session" // the session cookie
	methodOpen    = "open"    // no auth configured (loopback)
	methodLogin   = "login"   // the sign-in form
	methodLink    = "link"    // a one-time sign-in link
)

// authResult is what authenticate found.
type authResult struct {
	role   Role
	method string
	// err is set when the session store did not answer.
	err error
}

// authenticate returns the role of r's credentials: RoleReader for every
// request when no credential is configured; RoleNone with method "" when
// r presents none, or with its method when the one it presents is wrong.
func (a *auth) authenticate(r *http.Request) authResult {
	if !a.enabled() {
		return authResult{role: RoleReader, method: methodOpen}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, _ := strings.Cut(h, " ")
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			return authResult{role: a.checkToken(strings.TrimSpace(cred)), method: methodBearer}
		case strings.EqualFold(scheme, "Basic"):
			user, pass, ok := r.BasicAuth()
			role := a.checkBasic(user, pass)
			if !ok {
				role = RoleNone
			}
			return authResult{role: role, method: methodBasic}
		}
		return authResult{method: scheme}
	}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		res := authResult{method: methodSession}
		sess, ok := a.parseSession(c.Value)
		if !ok {
			return res
		}
		valid, err := a.sessions.Valid(r.Context(), sess.id, sess.epoch)
		if err != nil {
			res.err = err
			return res
		}
		if valid {
			res.role = sess.role
		}
		return res
	}
	return authResult{}
}

func (a *auth) sessionKey(role Role) []byte {
	for _, t := range a.tokens {
		if t.role == role {
			return t.sessionKey
		}
	}
	return nil
}

func sign(key []byte, payload string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return hex.EncodeToString(m.Sum(nil))
}

// session is what a session cookie says, once its signature is checked.
type session struct {
	role   Role
	epoch  int64
	expiry time.Time
	id     string
}

// newSession returns a session cookie value of role, of the sessions'
// current epoch, valid for sessionTTL.
func (a *auth) newSession(ctx context.Context, role Role) (string, error) {
	epoch, err := a.sessions.Epoch(ctx)
	if err != nil {
		return "", err
	}
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	payload := strings.Join([]string{role.code(), strconv.FormatInt(epoch, 10),
		strconv.FormatInt(a.now().Add(sessionTTL).Unix(), 10), hex.EncodeToString(id[:])}, ".")
	return payload + "." + sign(a.sessionKey(role), payload), nil
}

// parseSession checks the signature and expiry of a session cookie value:
// false if it is forged, of a token no longer configured, or expired.
// Whether it was revoked is for Sessions to say.
func (a *auth) parseSession(v string) (session, bool) {
	payload, mac, ok := cutLast(v, ".")
	if !ok {
		return session{}, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 4 {
		return session{}, false
	}
	role := roleOfCode(parts[0])
	key := a.sessionKey(role)
	if key == nil || !hmac.Equal([]byte(mac), []byte(sign(key, payload))) {
		return session{}, false
	}
	epoch, err1 := strconv.ParseInt(parts[1], 10, 64)
	unix, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || a.now().Unix() >= unix {
		return session{}, false
	}
	return session{role: role, epoch: epoch, expiry: time.Unix(unix, 0), id: parts[3]}, true
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// challenge writes the 401 of a request without valid credentials. A
// browser navigating to a page is sent to the sign-in form when a token is
// configured; other requests get a JSON error and, with basic auth
// configured, the challenge that makes a browser ask for it.
func (a *auth) challenge(w http.ResponseWriter, r *http.Request) {
	if a.hasToken() && r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") &&
		r.Header.Get("Authorization") == "" {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	if a.hasBasic() {
		w.Header().Set("WWW-Authenticate", `Basic realm="Nudge reports", charset="UTF-8"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="Nudge reports"`)
	}
	writeError(w, http.StatusUnauthorized, "", "authentication required: send Authorization: Bearer <token> or basic auth")
}

type authKey struct{}

func withAuth(ctx context.Context, res authResult) context.Context {
	return context.WithValue(ctx, authKey{}, res)
}

// authOf returns the authentication of a request that passed the auth
// middleware.
func authOf(r *http.Request) authResult {
	res, _ := r.Context().Value(authKey{}).(authResult)
	return res
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

// checkCredentials refuses guessable or ambiguous credentials.
func checkCredentials(cfg ServerConfig) error {
	for _, t := range []struct{ name, token string }{{"token", cfg.Token}, {"admin token", cfg.AdminToken}} {
		if t.token != "" && len(t.token) < minTokenLen {
			return fmt.Errorf("%w: the %s is shorter than %d bytes (make one with: openssl rand -hex 24)", ErrConfig, t.name, minTokenLen)
		}
	}
	if cfg.AdminToken != "" && cfg.AdminToken == cfg.Token {
		return fmt.Errorf("%w: the admin token is the reader's token: give admins a token of their own", ErrConfig)
	}
	for _, b := range []struct{ name, user, pass string }{
		{"basic auth", cfg.BasicUser, cfg.BasicPassword},
		{"admin basic auth", cfg.AdminBasicUser, cfg.AdminBasicPassword},
	} {
		if b.user == "" && b.pass == "" {
			continue
		}
		if b.user == "" || strings.Contains(b.user, ":") {
			return fmt.Errorf("%w: %s needs a user name without ':'", ErrConfig, b.name)
		}
		if len(b.pass) < minPasswordLen {
			return fmt.Errorf("%w: the %s password is shorter than %d bytes", ErrConfig, b.name, minPasswordLen)
		}
	}
	if cfg.AdminBasicUser != "" && cfg.AdminBasicUser == cfg.BasicUser {
		return fmt.Errorf("%w: the admin basic auth user is the reader's: give admins a user name of their own", ErrConfig)
	}
	return nil
}

func noAuthError(addr string) error {
	return fmt.Errorf("%w: %s is reachable from other machines; set a token (-token or NUDGE_TOKEN) or basic auth (-basic-auth user:pass or NUDGE_BASIC_AUTH), or listen on 127.0.0.1",
		ErrNoAuth, addr)
}

func (s *Server) authKinds() string {
	var kinds []string
	for _, c := range []struct{ kind, value string }{
		{"token", s.cfg.Token}, {"basic", s.cfg.BasicUser}, {"admin-token", s.cfg.AdminToken}, {"admin-basic", s.cfg.AdminBasicUser},
	} {
		if c.value != "" {
			kinds = append(kinds, c.kind)
		}
	}
	if len(kinds) == 0 {
		return "none (loopback only)"
	}
	return strings.Join(kinds, "+")
}
