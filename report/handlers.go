package report

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults of the API's range parameters.
const (
	defaultFrom    = "-24h"
	defaultDAUFrom = "-30d"
	defaultTo      = "now"
)

// apiRequest is an API request's parameters, checked against the ones its
// endpoint takes.
type apiRequest struct {
	q   url.Values
	now time.Time
	loc *time.Location
	csv bool
}

// parse reads the query of r. Parameters other than allowed and "format"
// are an error (a misspelt filter must not silently widen a report), and so
// is a parameter given twice, but for metric when multi is set.
func (s *Server) parse(r *http.Request, multi bool, allowed ...string) (*apiRequest, error) {
	q := r.URL.Query()
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range q {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		if name != "format" && !slices.Contains(allowed, name) {
			takes := "format"
			if len(allowed) > 0 {
				takes = strings.Join(allowed, ", ") + " and format"
			}
			return nil, paramErr(truncate(name), "unknown parameter (this endpoint takes %s)", takes)
		}
		if len(q[name]) > 1 && !(multi && name == "metric") {
			return nil, paramErr(name, "given %d times", len(q[name]))
		}
	}
	rq := &apiRequest{q: q, now: s.cfg.Now(), loc: time.UTC}
	switch f := q.Get("format"); f {
	case "":
		rq.csv = strings.Contains(r.Header.Get("Accept"), "text/csv")
	case "json":
	case "csv":
		rq.csv = true
	default:
		return nil, paramErr("format", "must be json or csv, not %q", truncate(f))
	}
	if slices.Contains(allowed, "tz") {
		loc, err := LoadLocation(q.Get("tz"))
		if err != nil {
			return nil, err
		}
		rq.loc = loc
	}
	return rq, nil
}

// time parses the time parameter name, def if absent.
func (rq *apiRequest) time(name, def string) (time.Time, error) {
	v := rq.q.Get(name)
	if v == "" {
		v = def
	}
	t, err := ParseTime(v, rq.now, rq.loc)
	if err != nil {
		return time.Time{}, paramErr(name, "%q: %v", truncate(v), err)
	}
	return t, nil
}

// span parses from and to.
func (rq *apiRequest) span(defFrom string) (from, to time.Time, err error) {
	if from, err = rq.time("from", defFrom); err != nil {
		return from, to, err
	}
	if to, err = rq.time("to", defaultTo); err != nil {
		return from, to, err
	}
	return from, to, nil
}

func (rq *apiRequest) bool(name string) (bool, error) {
	switch v := rq.q.Get(name); v {
	case "", "0", "false", "off":
		return false, nil
	case "1", "true", "on":
		return true, nil
	default:
		return false, paramErr(name, "must be 1 or 0, not %q", truncate(v))
	}
}

func (rq *apiRequest) filter() Filter {
	return Filter{App: rq.q.Get("app"), Platform: rq.q.Get("platform"), Reason: rq.q.Get("reason")}
}

// apiHandler runs an API endpoint with the request timeout and turns its
// error into a JSON error response.
func (s *Server) apiHandler(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !queryParses(w, r) {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
		defer cancel()
		err := h(w, r.WithContext(ctx))
		if err == nil {
			return
		}
		status, param, msg := s.errStatus(r, err)
		if status >= 500 {
			s.log.Error("report failed", "path", r.URL.Path, "status", status, "err", err)
		}
		writeError(w, status, param, msg)
	})
}

// queryParses answers 400 and returns false if the query string of r does
// not parse. r.URL.Query() drops what it cannot parse (a pair with a raw
// ';', a bad escape) and keeps the rest, which would silently widen a
// report by the filter it dropped.
func queryParses(w http.ResponseWriter, r *http.Request) bool {
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		writeError(w, http.StatusBadRequest, "", "query string: "+err.Error()+
			" (separate parameters with & and percent-encode ';' as %3B, '%' as %25)")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// apiError is the body of every error response.
type apiError struct {
	Error string `json:"error"`
	// Param names the bad query parameter, if one is to blame.
	Param string `json:"param,omitempty"`
}

func writeError(w http.ResponseWriter, status int, param, msg string) {
	writeJSON(w, status, apiError{Error: msg, Param: param})
}

// unknownZone reports a Postgres error about a time zone it does not know
// (its zone data may be older than Go's).
func unknownZone(err error) (string, bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "22023" && strings.Contains(pe.Message, "time zone") {
		return pe.Message, true
	}
	return "", false
}

// tabular is an answer of the API that has a CSV form too: a file name, a
// header and rows.
type tabular interface {
	csvTable() (name string, header []string, rows [][]string)
}

// reply answers a request with res: as JSON, or as CSV when the request
// asked for it. Once the status is sent a write error is the client's: it
// is not reported.
func reply(w http.ResponseWriter, rq *apiRequest, res tabular) error {
	if !rq.csv {
		writeJSON(w, http.StatusOK, res)
		return nil
	}
	name, header, rows := res.csvTable()
	setCSVHeaders(w, name)
	_ = writeCSVRows(w, header, rows)
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 4, 64) }

func (s *Server) apiSeries(w http.ResponseWriter, r *http.Request) error {
	rq, err := s.parse(r, false, "metric", "from", "to", "step", "tz", "app", "platform", "reason", "group", "live")
	if err != nil {
		return err
	}
	q := SeriesQuery{Metric: rq.q.Get("metric"), Location: rq.loc, Filter: rq.filter()}
	if q.From, q.To, err = rq.span(defaultFrom); err != nil {
		return err
	}
	if v := rq.q.Get("step"); v != "" {
		if q.Step, err = ParseStep(v); err != nil {
			return err
		}
	}
	if q.Group, err = ParseDimension(rq.q.Get("group")); err != nil {
		return err
	}
	if q.Live, err = rq.bool("live"); err != nil {
		return err
	}
	res, err := s.store.Series(r.Context(), q)
	if err != nil {
		return err
	}
	return reply(w, rq, res)
}

func (s *Server) apiTotals(w http.ResponseWriter, r *http.Request) error {
	rq, err := s.parse(r, true, "metric", "from", "to", "tz", "app", "platform", "reason", "group", "live")
	if err != nil {
		return err
	}
	q := TotalsQuery{Filter: rq.filter()}
	for _, v := range rq.q["metric"] {
		for m := range strings.SplitSeq(v, ",") {
			if m = strings.TrimSpace(m); m != "" {
				q.Metrics = append(q.Metrics, m)
			}
		}
	}
	if len(q.Metrics) == 0 {
		for _, m := range Metrics() {
			q.Metrics = append(q.Metrics, m.Name)
		}
	}
	if q.From, q.To, err = rq.span(defaultFrom); err != nil {
		return err
	}
	if q.Group, err = ParseDimension(rq.q.Get("group")); err != nil {
		return err
	}
	if q.Live, err = rq.bool("live"); err != nil {
		return err
	}
	res, err := s.store.Totals(r.Context(), q)
	if err != nil {
		return err
	}
	return reply(w, rq, res)
}

// rangeQuery parses the parameters of the funnel and push reports.
func (s *Server) rangeQuery(r *http.Request) (*apiRequest, RangeQuery, error) {
	var q RangeQuery
	rq, err := s.parse(r, false, "from", "to", "tz", "app", "platform", "live")
	if err != nil {
		return nil, q, err
	}
	q.Filter = rq.filter()
	if q.From, q.To, err = rq.span(defaultFrom); err != nil {
		return nil, q, err
	}
	if q.Live, err = rq.bool("live"); err != nil {
		return nil, q, err
	}
	return rq, q, nil
}

// rangeAnswer is the handler of a report over a range (the funnel, the
// effectiveness, the push report): the request's RangeQuery, the store's
// answer to it, as JSON or CSV.
func rangeAnswer[T tabular](s *Server, answer func(*Store, context.Context, RangeQuery) (T, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		rq, q, err := s.rangeQuery(r)
		if err != nil {
			return err
		}
		res, err := answer(s.store, r.Context(), q)
		if err != nil {
			return err
		}
		return reply(w, rq, res)
	}
}

func (s *Server) apiDAU(w http.ResponseWriter, r *http.Request) error {
	rq, err := s.parse(r, false, "from", "to", "tz", "app", "group")
	if err != nil {
		return err
	}
	q := DAUQuery{Location: rq.loc, App: rq.q.Get("app")}
	if q.From, q.To, err = rq.span(defaultDAUFrom); err != nil {
		return err
	}
	switch g := rq.q.Get("group"); g {
	case "":
	case "app":
		q.ByApp = true
	default:
		return paramErr("group", "daily active users group by app only, not %q", truncate(g))
	}
	res, err := s.store.DAU(r.Context(), q)
	if err != nil {
		return err
	}
	return reply(w, rq, res)
}

func (s *Server) apiMetrics(w http.ResponseWriter, r *http.Request) error {
	rq, err := s.parse(r, false)
	if err != nil {
		return err
	}
	return reply(w, rq, metricsAnswer{Funnel: FunnelMetrics, Live: s.store.HasLive(), Metrics: Metrics()})
}

func (s *Server) apiDimensions(w http.ResponseWriter, r *http.Request) error {
	rq, err := s.parse(r, false, "from", "to", "tz")
	if err != nil {
		return err
	}
	from, to, err := rq.span("-30d")
	if err != nil {
		return err
	}
	res, err := s.store.Dimensions(r.Context(), from, to)
	if err != nil {
		return err
	}
	return reply(w, rq, res)
}

// sessionInfo is the answer of /api/session: who the request is.
type sessionInfo struct {
	// Role is "reader" or "admin".
	Role string `json:"role"`
	// Auth is how the request signed in: "bearer", "basic", "session",
	// or "open" (a server without auth, on loopback).
	Auth string `json:"auth"`
	// Queues is what the role can do in the queues UI: "read-only",
	// "writable" or "off" (not mounted).
	Queues string `json:"queues"`
}

func (s *Server) apiSession(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.parse(r, false); err != nil {
		return err
	}
	res := authOf(r)
	writeJSON(w, http.StatusOK, sessionInfo{Role: res.role.String(), Auth: res.method, Queues: s.queuesMode(res.role)})
	return nil
}
