package sandbox

import (
	"encoding/json"
	"net/http"
)

// controlRoutes adds the control API (see README.md) to the FCM listener's mux.
func (s *Server) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /sandbox/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /sandbox/deliveries", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ds := filterDeliveries(s.Deliveries(), q.Get("token"), q.Get("platform"))
		writeJSON(w, http.StatusOK, map[string]any{"deliveries": ds})
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
