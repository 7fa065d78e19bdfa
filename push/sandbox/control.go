package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// A deliveries listing shows the newest 50 matches unless limit asks for
// more, up to 1,000: the sandbox may hold 100,000.
const (
	defaultListLimit = 50
	maxListLimit     = 1000
)

// controlRoutes adds the control API (see README.md) to the FCM listener's mux.
func (s *Server) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /sandbox/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /sandbox/deliveries", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := defaultListLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxListLimit {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("limit: want 1 to %d, got %q", maxListLimit, v)})
				return
			}
			limit = n
		}
		order := q.Get("order")
		if order != "" && order != "newest" && order != "oldest" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("order: want newest or oldest, got %q", order)})
			return
		}
		ds := filterDeliveries(s.Deliveries(), q.Get("token"), q.Get("platform"))
		if v := q.Get("since"); v != "" {
			since, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("since: want an RFC 3339 time, got %q", v)})
				return
			}
			ds = slices.DeleteFunc(ds, func(d Delivery) bool { return !d.Time.After(since) })
		}
		total := len(ds)
		if order != "oldest" {
			slices.Reverse(ds)
		}
		ds = ds[:min(limit, len(ds))]
		writeJSON(w, http.StatusOK, map[string]any{"deliveries": ds, "matching": total, "shown": len(ds)})
	})
	mux.HandleFunc("DELETE /sandbox/deliveries", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("POST /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		var set FaultSet
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&set); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "decode fault set: " + err.Error()})
			return
		}
		if err := s.applyFaultSet(set); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("DELETE /sandbox/faults", func(w http.ResponseWriter, r *http.Request) {
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /sandbox/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
}
