package report

// The sign-in page, sign-in links, sessions and sign-out of the dashboard.

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// safeNext returns next if it is a path of this server, else "/": the
// sign-in form must not redirect elsewhere.
func safeNext(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}

func (s *Server) renderLogin(w http.ResponseWriter, status int, next, msg string) {
	setCSP(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := s.login.Execute(w, map[string]any{"Next": next, "Error": msg, "Token": s.auth.hasToken(), "Basic": s.auth.hasBasic()}); err != nil {
		s.log.Warn("sign-in page", "err", err)
	}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if code := r.URL.Query().Get("code"); code != "" {
		s.signInByLink(w, r, code, next)
		return
	}
	s.renderLogin(w, http.StatusOK, next, "")
}

// signInByLink opens a session for a one-time sign-in link's code
// (NewSignInLink) and sends the browser on to next. A code used, expired
// or unknown counts as a failed sign-in.
func (s *Server) signInByLink(w http.ResponseWriter, r *http.Request, code, next string) {
	client := clientAddr(r, s.cfg.TrustedProxies)
	if s.signInsLimited(w, client, methodLink, next) {
		return
	}
	if len(code) > 64 {
		code = code[:64]
	}
	role, err := s.auth.sessions.Redeem(r.Context(), code)
	if err != nil {
		s.log.Error("sign-in link", "err", err)
		msg := "Signing in with a link is not possible now: the session store does not answer."
		if errors.Is(err, errNoLinks) {
			msg = "This server takes no sign-in links: it runs without Redis."
		}
		s.renderLogin(w, http.StatusServiceUnavailable, next, msg)
		return
	}
	if role == RoleNone {
		s.log.Warn("sign-in link refused: used, expired or unknown", "remote", r.RemoteAddr)
		s.authFailed(r, client, methodLink)
		s.renderLogin(w, http.StatusUnauthorized, next,
			"This sign-in link was used already or has expired: make a new one with `report sessions sign-in-link`.")
		return
	}
	if s.auth.sessionKey(role) == nil {
		s.log.Warn("sign-in link of a role without a token", "role", role)
		s.renderLogin(w, http.StatusUnauthorized, next,
			fmt.Sprintf("This server has no %s token, and a sign-in link opens a session signed with it.", role))
		return
	}
	s.openSession(w, r, role, next)
}

func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, http.StatusBadRequest, "/", "The form could not be read.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	client := clientAddr(r, s.cfg.TrustedProxies)
	if s.signInsLimited(w, client, methodLogin, next) {
		return
	}
	role := s.auth.checkToken(r.PostForm.Get("token"))
	if role == RoleNone {
		s.log.Warn("sign-in refused", "remote", r.RemoteAddr)
		s.authFailed(r, client, methodLogin)
		s.renderLogin(w, http.StatusUnauthorized, next, "That token is not valid.")
		return
	}
	s.openSession(w, r, role, next)
}

// signInsLimited answers 429 with the sign-in page and reports true when
// client must wait before another sign-in by method is checked.
func (s *Server) signInsLimited(w http.ResponseWriter, client netip.Addr, method, next string) bool {
	wait := s.limiter.wait(client)
	if wait <= 0 {
		return false
	}
	s.authMet.limited.WithLabelValues(method).Inc()
	secs := tooMany(w, wait)
	s.renderLogin(w, http.StatusTooManyRequests, next, fmt.Sprintf("Too many failed sign-ins from your address: try again in %d s.", secs))
	return true
}

// openSession sets the session cookie of role and redirects to next.
func (s *Server) openSession(w http.ResponseWriter, r *http.Request, role Role, next string) {
	value, err := s.auth.newSession(r.Context(), role)
	if err != nil {
		s.log.Error("sign-in: session store", "err", err)
		s.renderLogin(w, http.StatusServiceUnavailable, next, "Signing in is not possible now: the session store does not answer.")
		return
	}
	//nolint:gosec // G124: Secure whenever the browser came over TLS (here or at a proxy); a Secure cookie over plain HTTP on loopback would be dropped.
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   int(sessionTTL / time.Second),
		HttpOnly: true,
		Secure:   overTLS(r),
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, next, http.StatusSeeOther) //nolint:gosec // G710: next went through safeNext, a path of this server only.
}

// overTLS reports whether the browser reached the server over TLS,
// directly or through a proxy that says so. (A forged header only makes
// the cookie stricter.)
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// logout ends the request's session: the cookie is deleted in the browser
// and its id revoked until it would have expired, so a copy of it is
// refused too.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if _, _, basic := r.BasicAuth(); basic {
		// Nothing to end on the server: the browser sends the same
		// credentials with every request until it is closed.
		s.renderLogin(w, http.StatusOK, "/", "You signed in with basic auth, which your browser keeps sending "+
			"until it is closed: close the browser to sign out.")
		return
	}
	//nolint:gosec // G124: a deleting cookie, with the attributes of the one it deletes.
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: overTLS(r), SameSite: http.SameSiteStrictMode})
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess, ok := s.auth.parseSession(c.Value); ok {
			if err := s.auth.sessions.Revoke(r.Context(), sess.id, sess.expiry); err != nil {
				s.log.Error("sign-out: session store", "err", err)
				writeError(w, http.StatusServiceUnavailable, "", "the sign-out could not be recorded (the session store does not answer): the session stays valid until it expires or every session is revoked")
				return
			}
		}
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
