package report

// What wraps every handler: the Host check of a loopback server, security
// headers, request logs, failed sign-ins counted.

import (
	"cmp"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// loopbackHostOnly guards a server without auth (listening on loopback)
// from DNS rebinding: a page of attacker.example whose name then resolves
// to 127.0.0.1 would reach it as same-origin, with Host attacker.example.
// Only "localhost" and loopback IP literals, with any port, are served; a
// name the attacker controls is answered 421.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopbackHostHeader(r.Host) {
			writeError(w, http.StatusMisdirectedRequest, "",
				"this server has no authentication and answers only requests for localhost, 127.0.0.1 or [::1], not Host "+strconv.Quote(truncate(r.Host)))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// isLoopbackHostHeader reports whether the Host header hostport names this
// machine in a way DNS cannot rebind: "localhost" or a loopback IP literal.
func isLoopbackHostHeader(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.IsLoopback()
}

// commonHeaders sets the headers every response carries.
func commonHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// pageHeaders sets the Content-Security-Policy of the dashboard's own pages:
// no inline script, nothing from another origin. (asynqmon's pages get
// their own: see queuesUI.)
func pageHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setCSP(w)
		h.ServeHTTP(w, r)
	})
}

func setCSP(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy",
		"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
}

// statusWriter records the status of a response for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = cmp.Or(w.status, code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.status = cmp.Or(w.status, http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		level := slog.LevelInfo
		if r.URL.Path == "/healthz" || strings.HasPrefix(r.URL.Path, "/assets/") || strings.HasPrefix(r.URL.Path, QueuesPath+"/static/") {
			level = slog.LevelDebug
		}
		// The path only: a query string is not a secret, but it is long.
		s.log.Log(r.Context(), level, "http request", "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "duration_ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr)
	})
}

// authFailed records a failed authentication of client.
func (s *Server) authFailed(r *http.Request, client netip.Addr, method string) {
	s.authMet.failures.WithLabelValues(metricMethod(method)).Inc()
	if wait := s.limiter.fail(client); wait > 0 {
		s.log.Warn("authentication failures: client must wait", "client", client.String(), "remote", r.RemoteAddr,
			"method", metricMethod(method), "wait", wait.String())
	}
}
