package report

// The pages: the dashboard, the queues UI and /healthz.

import (
	"context"
	"net/http"
	"time"
)

// queuesUI serves the queues UI of the request's role: writable for an
// admin (unless QueuesReadOnly), read-only for everyone else.
func (s *Server) queuesUI(w http.ResponseWriter, r *http.Request) {
	if authOf(r).role == RoleAdmin && s.queuesRW != nil {
		s.queuesRW.ServeHTTP(w, r)
		return
	}
	s.queues.ServeHTTP(w, r)
}

// queuesMode says what role can do in the queues UI: "writable",
// "read-only" or "off" (not mounted).
func (s *Server) queuesMode(role Role) string {
	switch {
	case s.queues == nil:
		return "off"
	case role == RoleAdmin && s.queuesRW != nil:
		return "writable"
	}
	return "read-only"
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("healthz: database does not answer", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "database unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	setCSP(w)
	w.Header().Set("Cache-Control", "no-store")
	http.ServeFileFS(w, r, s.assets, "index.html")
}
