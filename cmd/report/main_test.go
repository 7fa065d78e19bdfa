package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	url    string
	prefix string
	env    map[string]string
}

func (b *bundle) getenv(k string) string { return b.env[k] }

// setup makes a migrated database with messages around the night Berlin
// moves its clocks forward, and a Redis prefix.
func setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	_, prefix := redistest.New(t)
	db, url := pgtest.NewMigrated(t)
	rows := []struct {
		at    string
		app   string
		value int64
	}{
		{"2026-03-28T22:59:00Z", "chat", 1},  // the 28th in Berlin
		{"2026-03-28T23:00:00Z", "chat", 10}, // the 29th in Berlin
		{"2026-03-29T21:59:00Z", "shop", 20}, // still the 29th (CEST)
		{"2026-03-29T22:00:00Z", "chat", 300},
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT counters_minute_create_partitions($1, $1)", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)); err != nil {
			return err
		}
		for _, r := range rows {
			ts, _ := time.Parse(time.RFC3339, r.at)
			for table, bucket := range map[string]time.Time{
				"counters_minute": ts, "counters_hour": ts.Truncate(time.Hour), "counters_day": ts.Truncate(24 * time.Hour),
			} {
				if _, err := tx.Exec(ctx, `INSERT INTO `+table+` AS c (bucket, metric, app, platform, reason, value) VALUES ($1, $2, $3, '', '', $4)
ON CONFLICT (bucket, metric, app, platform, reason) DO UPDATE SET value = c.value + EXCLUDED.value`,
					bucket, counters.MessagesSent, r.app, r.value); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{url: url, prefix: prefix, env: map[string]string{
		"NUDGE_DATABASE_URL": url,
		"NUDGE_REDIS_URL":    "redis://" + redistest.Addr() + "/0",
		"NUDGE_PREFIX":       prefix,
		"NUDGE_SHARDS":       "2",
	}}
}

func TestPrint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.env["NUDGE_APP"] = "shop" // not a connection flag: must not filter
	berlinDays := []string{"-metric", "messages_sent", "-from", "2026-03-28", "-to", "2026-03-31", "-step", "day", "-tz", "Europe/Berlin"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "table",
			args: berlinDays,
			want: "" +
				"TIME (Europe/Berlin)  VALUE\n" +
				"2026-03-28                1\n" +
				"2026-03-29               30\n" +
				"2026-03-30              300\n" +
				"TOTAL                   331\n",
		},
		{
			name: "table by app, print spelled out",
			args: append([]string{"print"}, append(berlinDays, "-group", "app", "-from", "2026-03-29", "-to", "2026-03-30")...),
			want: "" +
				"TIME (Europe/Berlin)  APP   VALUE\n" +
				"2026-03-29            shop     20\n" +
				"2026-03-29            chat     10\n" +
				"TOTAL                          30\n",
		},
		{
			name: "csv",
			args: append(berlinDays, "-format", "csv", "-app", "chat"),
			want: "" +
				"time,value,live\n" +
				"2026-03-28T00:00:00+01:00,1,false\n" +
				"2026-03-29T00:00:00+01:00,10,false\n" +
				"2026-03-30T00:00:00+02:00,300,false\n",
		},
		{
			name: "hours across the jump, with live",
			args: []string{"-metric", "messages_sent", "-from", "2026-03-29T01:00", "-to", "2026-03-29T04:00", "-tz", "Europe/Berlin", "-live"},
			want: "" +
				"TIME (Europe/Berlin)   VALUE  LIVE\n" +
				"2026-03-29 01:00 CET       0\n" +
				"2026-03-29 03:00 CEST      0\n" +
				"TOTAL                      0\n" +
				// This test's Redis holds nothing under its prefix.
				"note: Redis holds no key of Nudge's under the prefix \"" + b.prefix + "\": no live counters (is -prefix, NUDGE_PREFIX, the one ingest uses?)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			if err := run(context.Background(), tt.args, b.getenv, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			if out.String() != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out.String(), tt.want)
			}
		})
	}
}

func TestPrintLive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rdb, _ := redistest.New(t)
	ks := keys.New(b.prefix, 2)
	now := time.Now()
	if err := counters.Add(context.Background(), rdb, ks, 1, now, map[counters.Dims]int64{{Metric: counters.Reads, App: "chat"}: 4}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-metric", "reads", "-from", "-1h", "-step", "day", "-live", "-format", "csv"}, b.getenv, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), ",4,true\n") {
		t.Errorf("live output:\n%s", out.String())
	}
	// Counters live under the prefix: no note.
	out.Reset()
	if err := run(context.Background(), []string{"-metric", "reads", "-from", "-1h", "-live"}, b.getenv, &out); err != nil || strings.Contains(out.String(), "note:") {
		t.Errorf("live table of a prefix with keys: %v\n%s", err, out.String())
	}
	// A prefix Redis holds nothing under (a typo) says so.
	env := map[string]string{}
	maps.Copy(env, b.env)
	env["NUDGE_PREFIX"] = b.prefix + "typo"
	out.Reset()
	if err := run(context.Background(), []string{"-metric", "reads", "-from", "-1h", "-live"}, func(k string) string { return env[k] }, &out); err != nil ||
		!strings.Contains(out.String(), `note: Redis holds no key of Nudge's under the prefix "`+b.prefix+`typo"`) {
		t.Errorf("live table of a prefix without keys: %v\n%s", err, out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{"NUDGE_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"-from", "-1d"}, "-metric: is required"},
		{[]string{"-metric", "reads", "-step", "week"}, "-step: must be minute, hour or day"},
		{[]string{"-metric", "reads", "-group", "user"}, "-group"},
		{[]string{"-metric", "reads", "-tz", "Mars/Olympus"}, "-tz"},
		{[]string{"-metric", "reads", "-from", "last week"}, "-from"},
		{[]string{"-metric", "reads", "-format", "xml"}, "-format"},
		{[]string{"-metric", "message_sent"}, `unknown metric "message_sent"; the metrics are messages_sent, recipients,`},
		{[]string{"metrics", "extra"}, "takes no arguments"},
		{[]string{"sessions", "sign-in-link", "-role", "root"}, `-role: role "root": want reader or admin`},
		{[]string{"sessions", "sign-in-link", "-url", "http://admin:pw@host"}, "without credentials"},
		{[]string{"sessions", "sign-in-link", "-next", "https://evil.example/"}, "a path of the server"},
		{[]string{"sessions", "open"}, "revoke-all or sign-in-link"},
		{[]string{"-metric", "reads", "extra"}, "unexpected arguments"},
		{[]string{"-metric", "reads", "-from", "now", "-to", "-1h"}, "-from: must be before to"},
		{[]string{"serve", "-basic-auth", "nocolon"}, "user:password"},
		{[]string{"serve", "-admin-basic-auth", "nocolon"}, "-admin-basic-auth must be user:password"},
		{[]string{"serve", "-trusted-proxies", "10.0.0.0/8,proxy.example"}, "-trusted-proxies"},
		{[]string{"serve", "-log-level", "loud"}, "-log-level"},
		{[]string{"serve", "-shards", "0"}, "-shards"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		err := run(context.Background(), tt.args, func(k string) string { return env[k] }, &out)
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run %q = %v, want a usage error with %q", tt.args, err, tt.want)
		}
	}
	err := run(context.Background(), []string{"-metric", "reads"}, func(string) string { return "" }, io.Discard)
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "NUDGE_DATABASE_URL") {
		t.Errorf("run without a database = %v", err)
	}
}

func TestServeRefusesNonLoopbackWithoutAuth(t *testing.T) {
	t.Parallel()
	env := map[string]string{"NUDGE_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}
	for _, addr := range []string{"0.0.0.0:0", ":8090"} {
		err := run(context.Background(), []string{"serve", "-addr", addr}, func(k string) string { return env[k] }, io.Discard)
		if !errors.Is(err, report.ErrNoAuth) || !strings.Contains(err.Error(), "-token") {
			t.Errorf("serve -addr %s without auth = %v, want ErrNoAuth saying what to set", addr, err)
		}
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const token = "a-token-of-the-test-0123456789"
	const adminToken = "the-admin-token-of-the-test-0123"
	b.env["NUDGE_TOKEN"] = token
	b.env["NUDGE_ADMIN_TOKEN"] = adminToken
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out harness.Buffer
	done := make(chan error, 1)
	metrics := freeport.Addr(t)
	go func() {
		done <- run(ctx, []string{"serve", "-addr", "127.0.0.1:0", "-log-level", "debug", "-metrics-addr", metrics}, b.getenv, &out)
	}()

	// The listening address is in the log; poll for it.
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		select {
		case err := <-done:
			t.Fatalf("serve stopped: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening log line:\n%s", out.String())
		}
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
				Auth string `json:"auth"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "report server listening" {
				addr = line.Addr
				if line.Auth != "token+admin-token" {
					t.Errorf("auth = %q, want token+admin-token (from NUDGE_TOKEN and NUDGE_ADMIN_TOKEN)", line.Auth)
				}
			}
		}
		if addr == "" {
			time.Sleep(10 * time.Millisecond)
		}
	}

	getAs := func(path, bearer string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	get := func(path string, auth bool) (int, string) {
		if auth {
			return getAs(path, token)
		}
		return getAs(path, "")
	}
	if code, body := getAs("/api/session", token); code != http.StatusOK || !strings.Contains(body, `"role":"reader","auth":"bearer","queues":"read-only"`) {
		t.Errorf("session of the reader token = %d %s", code, body)
	}
	if code, body := getAs("/api/session", adminToken); code != http.StatusOK || !strings.Contains(body, `"role":"admin","auth":"bearer","queues":"writable"`) {
		t.Errorf("session of the admin token = %d %s", code, body)
	}
	if code, _ := get("/api/metrics", false); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	if code, body := get("/api/totals?metric=messages_sent&from=2026-03-28&to=2026-03-31", true); code != http.StatusOK || !strings.Contains(body, `"value":331`) {
		t.Errorf("totals = %d %s", code, body)
	}
	if code, body := get("/queues", true); code != http.StatusOK || !strings.Contains(body, "Asynq") {
		t.Errorf("queues = %d %.200s", code, body)
	}
	if code, _ := get("/healthz", false); code != http.StatusOK {
		t.Errorf("healthz = %d", code)
	}
	if code, _ := getAs("/api/metrics", "a-wrong-token-0123456789"); code != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d", code)
	}
	if v := metricstest.Value(t, metrics, `nudge_report_auth_failures_total{method="bearer"}`); v != 1 {
		t.Errorf(`nudge_report_auth_failures_total{method="bearer"} = %v, want 1`, v)
	}
	if code, body := metricstest.Get(t, metrics, "/readyz"); code != http.StatusOK || !strings.Contains(body, "redis: ok") || !strings.Contains(body, "postgres: ok") {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, body := metricstest.Get(t, metrics, "/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d %.300s", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve = %v after cancel\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `"msg":"report server stopped"`) {
		t.Errorf("no stop log line:\n%s", out.String())
	}
}

// With Redis down, serve still serves Postgres reports, and its /readyz
// says what is missing with a 503.
func TestServeNotReadyWithoutRedis(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.env["NUDGE_REDIS_URL"] = "redis://" + freeport.Addr(t) + "/0" // nothing listens there
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	metrics := freeport.Addr(t)
	var out harness.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-addr", "127.0.0.1:0", "-metrics-addr", metrics}, b.getenv, &out)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := metricstest.Get(t, metrics, "/readyz")
		if code == http.StatusServiceUnavailable {
			if !strings.Contains(body, "redis:") || !strings.Contains(body, "postgres: ok") {
				t.Errorf("/readyz body:\n%s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s, want 503\n%s", code, body, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := metricstest.Get(t, metrics, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200: the process is alive", code)
	}
	if v := metricstest.Value(t, metrics, `nudge_redis_errors_total{component="report"}`); v < 1 {
		t.Errorf("nudge_redis_errors_total = %v, want the failed pings counted", v)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve = %v after cancel", err)
	}
}

// served is a `report serve` run by a test.
type served struct {
	addr   string
	out    *harness.Buffer
	cancel context.CancelFunc
	done   chan error
}

// startServe runs `report serve -addr 127.0.0.1:0 args...` with b's
// environment and returns once it listens.
func startServe(t *testing.T, b *bundle, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{out: &harness.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- run(ctx, append([]string{"serve", "-addr", "127.0.0.1:0", "-metrics-addr", ""}, args...), b.getenv, s.out)
	}()
	t.Cleanup(func() { s.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for s.addr == "" {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("serve stopped: %v\n%s", err, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening log line:\n%s", s.out.String())
		}
		sc := bufio.NewScanner(strings.NewReader(s.out.String()))
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "report server listening" {
				s.addr = line.Addr
			}
		}
		if s.addr == "" {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return s
}

// stop cancels the server and waits for it (once).
func (s *served) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	if err := <-s.done; err != nil {
		t.Errorf("serve = %v after cancel\n%s", err, s.out.String())
	}
}

// do sends a request to the server and returns the status.
func (s *served) do(t *testing.T, method, path string, form url.Values, header ...string) (int, *http.Response) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, "http://"+s.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, res
}

func (s *served) signIn(t *testing.T, token string) string {
	t.Helper()
	code, res := s.do(t, http.MethodPost, "/login", url.Values{"token": {token}, "next": {"/"}})
	for _, c := range res.Cookies() {
		if c.Name == "nudge_report_session" && c.Value != "" {
			return c.Value
		}
	}
	t.Fatalf("sign-in = %d without a session cookie", code)
	return ""
}

func (s *served) session(t *testing.T, cookie string) int {
	t.Helper()
	code, _ := s.do(t, http.MethodGet, "/api/metrics", nil, "Cookie", "nudge_report_session="+cookie)
	return code
}

// A sign-out, and `report sessions revoke-all`, end sessions for good: a
// restarted server (sharing the Redis) refuses their cookies too.
func TestSessionsRevokedAcrossRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const token = "a-token-of-the-test-0123456789"
	b.env["NUDGE_TOKEN"] = token

	srv := startServe(t, b)
	leaving, staying, other := srv.signIn(t, token), srv.signIn(t, token), srv.signIn(t, token)
	if code := srv.session(t, leaving); code != http.StatusOK {
		t.Fatalf("with a fresh session: %d", code)
	}
	if code, _ := srv.do(t, http.MethodPost, "/logout", nil, "Cookie", "nudge_report_session="+leaving); code != http.StatusSeeOther {
		t.Fatalf("POST /logout = %d", code)
	}
	if code := srv.session(t, leaving); code != http.StatusUnauthorized {
		t.Errorf("after sign-out: %d, want 401", code)
	}
	srv.stop(t)

	srv = startServe(t, b)
	if code := srv.session(t, leaving); code != http.StatusUnauthorized {
		t.Errorf("signed out, after a restart: %d, want 401", code)
	}
	if code := srv.session(t, staying); code != http.StatusOK {
		t.Errorf("another session, after a restart: %d, want 200", code)
	}

	var out bytes.Buffer
	if err := run(context.Background(), []string{"sessions", "revoke-all"}, b.getenv, &out); err != nil {
		t.Fatalf("report sessions revoke-all: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "revoked") {
		t.Errorf("revoke-all said %q", out.String())
	}
	for _, c := range []string{staying, other} {
		if code := srv.session(t, c); code != http.StatusUnauthorized {
			t.Errorf("after revoke-all: %d, want 401", code)
		}
	}
	srv.stop(t)

	srv = startServe(t, b)
	for _, c := range []string{leaving, staying, other} {
		if code := srv.session(t, c); code != http.StatusUnauthorized {
			t.Errorf("after revoke-all and a restart: %d, want 401", code)
		}
	}
	if code := srv.session(t, srv.signIn(t, token)); code != http.StatusOK {
		t.Errorf("a new session after revoke-all: %d, want 200", code)
	}
}
