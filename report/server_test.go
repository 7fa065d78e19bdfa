package report_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/testclock"
	"github.com/nudgehq/nudge/report"
)

const (
	testToken    = "s3cret-token-0123456789"
	testUser     = "admin"
	testPassword = "correct horse battery"
)

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

func basic(user, pass string) []string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, pass)
	return []string{"Authorization", r.Header.Get("Authorization")}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	queues := listedQueues
	tests := []struct {
		name string
		cfg  report.ServerConfig
		ok   [][]string
		bad  [][]string
	}{
		{
			name: "token",
			cfg:  report.ServerConfig{Token: testToken, Queues: queues},
			ok:   [][]string{bearer(testToken), {"Authorization", "bearer " + testToken}},
			bad:  [][]string{nil, bearer("wrong"), bearer(testToken + "x"), bearer(""), basic(testUser, testToken), {"Authorization", testToken}},
		},
		{
			name: "basic",
			cfg:  report.ServerConfig{BasicUser: testUser, BasicPassword: testPassword, Queues: queues},
			ok:   [][]string{basic(testUser, testPassword)},
			bad:  [][]string{nil, basic(testUser, "wrong"), basic("root", testPassword), basic(testUser, ""), bearer(testPassword)},
		},
		{
			name: "token and basic",
			cfg:  report.ServerConfig{Token: testToken, BasicUser: testUser, BasicPassword: testPassword, Queues: queues},
			ok:   [][]string{bearer(testToken), basic(testUser, testPassword)},
			bad:  [][]string{nil, bearer(testPassword), basic(testUser, testToken)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.AuthFailureLimit = -1 // many wrong credentials from one address: TestAuthFailuresAreLimited
			_, ts := b.server(t, tt.cfg)
			for _, path := range []string{"/", "/api/metrics", "/api/series?metric=messages_sent", "/queues", "/queues/api/queues"} {
				for _, h := range tt.ok {
					if code, _, body := get(t, ts.URL+path, h...); code != http.StatusOK {
						t.Errorf("GET %s with %q = %d, want 200: %.200s", path, h, code, body)
					}
				}
				for _, h := range tt.bad {
					code, hd, body := get(t, ts.URL+path, h...)
					if code != http.StatusUnauthorized {
						t.Errorf("GET %s with %q = %d, want 401", path, h, code)
						continue
					}
					if hd.Get("WWW-Authenticate") == "" || !strings.Contains(body, "authentication required") {
						t.Errorf("GET %s with %q: 401 without challenge or message: %v %s", path, h, hd, body)
					}
				}
			}
			if code, _, _ := get(t, ts.URL+"/healthz"); code != http.StatusOK {
				t.Errorf("GET /healthz = %d, want 200 without auth", code)
			}
		})
	}
}

func TestAuthBrowserSignIn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	clk := testclock.New(time.Now())
	_, ts := b.server(t, report.ServerConfig{Token: testToken, Now: clk.Now})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	// A browser without a session is sent to the sign-in form.
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/?range=24h", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/login?next=%2F%3Frange%3D24h" {
		t.Fatalf("GET / from a browser = %d to %q, want 303 to the sign-in form", res.StatusCode, res.Header.Get("Location"))
	}
	if code, _, body := get(t, ts.URL+"/login?next=/x"); code != http.StatusOK || !strings.Contains(body, `name="token"`) {
		t.Fatalf("GET /login = %d %s", code, body)
	}

	login := func(token, next string, header ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/login", strings.NewReader(url.Values{"token": {token}, "next": {next}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	if res := login("wrong", "/"); res.StatusCode != http.StatusUnauthorized || len(res.Cookies()) != 0 {
		t.Fatalf("sign-in with a wrong token = %d, cookies %v", res.StatusCode, res.Cookies())
	}
	if res := login(testToken, "/", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); res.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site sign-in = %d, want 403", res.StatusCode)
	}
	res = login(testToken, "//evil.example/")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("sign-in = %d to %q, want 303 to / (never another host)", res.StatusCode, res.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "nudge_report_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || strings.Contains(session.Value, testToken) {
		t.Fatalf("session cookie = %+v", session)
	}
	cookie := func(v string) []string { return []string{"Cookie", "nudge_report_session=" + v} }
	if code, _, _ := get(t, ts.URL+"/api/metrics", cookie(session.Value)...); code != http.StatusOK {
		t.Errorf("with the session: %d, want 200", code)
	}
	tampered := strings.Replace(session.Value, ".", "0.", 1)
	if code, _, _ := get(t, ts.URL+"/api/metrics", cookie(tampered)...); code != http.StatusUnauthorized {
		t.Errorf("with a tampered session: %d, want 401", code)
	}
	clk.Add(13 * time.Hour)
	if code, _, _ := get(t, ts.URL+"/api/metrics", cookie(session.Value)...); code != http.StatusUnauthorized {
		t.Errorf("with an expired session: %d, want 401", code)
	}
}

func TestRefuseNonLoopbackWithoutAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, addr := range []string{"0.0.0.0:8090", ":8090", "[::]:8090", "192.0.2.10:8090", "reports.example.com:8090"} {
		_, err := report.NewServer(b.store, report.ServerConfig{Addr: addr})
		if !errors.Is(err, report.ErrNoAuth) || !strings.Contains(err.Error(), "token") {
			t.Errorf("NewServer(%s) without auth = %v, want ErrNoAuth saying how to fix it", addr, err)
		}
		srv, err := report.NewServer(b.store, report.ServerConfig{Addr: addr, Token: testToken})
		if err != nil {
			t.Errorf("NewServer(%s) with a token: %v", addr, err)
		} else {
			_ = srv.Close()
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0", "[::1]:0", "127.0.0.2:0"} {
		srv, err := report.NewServer(b.store, report.ServerConfig{Addr: addr})
		if err != nil {
			t.Errorf("NewServer(%s) without auth: %v", addr, err)
		} else {
			_ = srv.Close()
		}
	}
	for _, cfg := range []report.ServerConfig{{Token: "short"}, {BasicUser: "a"}, {BasicUser: "a:b", BasicPassword: testPassword}, {BasicPassword: testPassword}} {
		if _, err := report.NewServer(b.store, cfg); !errors.Is(err, report.ErrConfig) {
			t.Errorf("NewServer(%+v) = %v, want ErrConfig", cfg, err)
		}
	}

	// Serve checks the listener too: a server configured for loopback
	// refuses to serve on every interface.
	srv, err := report.NewServer(b.store, report.ServerConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skipf("cannot listen on 0.0.0.0: %v", err)
	}
	if err := srv.Serve(context.Background(), ln); !errors.Is(err, report.ErrNoAuth) {
		t.Errorf("Serve on %s = %v, want ErrNoAuth", ln.Addr(), err)
	}
}

func TestServeUntilCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv, err := report.NewServer(b.store, report.ServerConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	// Serve owns the listener from the start: no wait needed.
	if code, _, body := get(t, "http://"+ln.Addr().String()+"/healthz"); code != http.StatusOK || !strings.Contains(body, "ok") {
		t.Fatalf("healthz = %d %s", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil after cancel", err)
	}
}

// apiBundle is a server over known counters, for API tests.
func apiBundle(t *testing.T) (*bundle, string) {
	t.Helper()
	b := setup(t)
	ts0 := at("2026-02-10T12:00:00Z")
	b.insert(t,
		sample{ts0, msg("chat"), 10},
		sample{ts0.Add(time.Hour), msg("chat"), 5},
		sample{ts0.Add(time.Hour), msg("=cmd|' /C calc'!A0"), 1},
		sample{ts0, counters.Dims{Metric: counters.PushSent, App: "chat", Platform: "fcm"}, 9},
		sample{ts0, counters.Dims{Metric: counters.PushFailed, App: "chat", Platform: "fcm", Reason: "quota"}, 1},
		sample{ts0, counters.Dims{Metric: counters.EpisodesOpened, App: "chat"}, 4},
	)
	b.setDAU(t, "2026-02-10", "chat", 42)
	clk := testclock.New(at("2026-02-11T00:00:00Z"))
	_, ts := b.server(t, report.ServerConfig{Now: clk.Now})
	return b, ts.URL
}

func TestAPI(t *testing.T) {
	t.Parallel()
	_, base := apiBundle(t)

	t.Run("series", func(t *testing.T) {
		t.Parallel()
		var s report.Series
		getJSON(t, base+"/api/series?metric=messages_sent&from=-12h&to=now&step=hour&app=chat", &s)
		if s.Total != 15 || s.Source != "counters_hour" || len(s.Groups[0].Points) != 12 || s.TZ != "UTC" {
			t.Errorf("series = %+v", s)
		}
		getJSON(t, base+"/api/series?metric=messages_sent&from=2026-02-10&to=2026-02-11&step=day&tz=Europe/Berlin&group=app", &s)
		if s.Source != "counters_hour" || s.From.Format(time.RFC3339) != "2026-02-10T00:00:00+01:00" || len(s.Groups) != 2 || s.Total != 16 {
			t.Errorf("Berlin series by app = %+v", s)
		}
	})
	t.Run("series csv", func(t *testing.T) {
		t.Parallel()
		for _, h := range [][]string{nil, {"Accept", "text/csv"}} {
			u := base + "/api/series?metric=messages_sent&from=2026-02-10T12:00:00Z&to=2026-02-10T14:00:00Z&step=hour&group=app"
			if h == nil {
				u += "&format=csv"
			}
			code, hd, body := get(t, u, h...)
			if code != http.StatusOK || !strings.HasPrefix(hd.Get("Content-Type"), "text/csv") ||
				hd.Get("Content-Disposition") != `attachment; filename="messages_sent.csv"` {
				t.Fatalf("CSV = %d %v", code, hd)
			}
			rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			want := [][]string{
				{"time", "app", "value", "live"},
				{"2026-02-10T12:00:00Z", "chat", "10", "false"},
				{"2026-02-10T12:00:00Z", "'=cmd|' /C calc'!A0", "0", "false"},
				{"2026-02-10T13:00:00Z", "chat", "5", "false"},
				{"2026-02-10T13:00:00Z", "'=cmd|' /C calc'!A0", "1", "false"},
			}
			if len(rows) != len(want) {
				t.Fatalf("CSV rows:\n%s", body)
			}
			for i := range want {
				if strings.Join(rows[i], ",") != strings.Join(want[i], ",") {
					t.Errorf("CSV row %d = %q, want %q", i, rows[i], want[i])
				}
			}
		}
	})
	t.Run("totals", func(t *testing.T) {
		t.Parallel()
		var tot report.Totals
		getJSON(t, base+"/api/totals?metric=messages_sent,push_sent&metric=episodes_opened&from=-1d", &tot)
		got := map[string]int64{}
		for _, r := range tot.Totals {
			got[r.Metric] = r.Value
		}
		if len(tot.Totals) != 3 || got["messages_sent"] != 16 || got["push_sent"] != 9 || got["episodes_opened"] != 4 {
			t.Errorf("totals = %+v", tot.Totals)
		}
		getJSON(t, base+"/api/totals?from=-1d", &tot)
		if len(tot.Totals) != len(report.Metrics()) {
			t.Errorf("totals of every metric: %d rows, want %d", len(tot.Totals), len(report.Metrics()))
		}
		code, _, body := get(t, base+"/api/totals?metric=messages_sent&from=-1d&format=csv")
		if code != http.StatusOK || body != "metric,value,live\nmessages_sent,16,false\n" {
			t.Errorf("totals CSV = %d %q", code, body)
		}
	})
	t.Run("funnel, push, dau", func(t *testing.T) {
		t.Parallel()
		var f report.Funnel
		getJSON(t, base+"/api/funnel?from=-1d&app=chat", &f)
		if len(f.Steps) != 6 || f.Steps[0].Value != 4 || f.Steps[5].Value != 1 {
			t.Errorf("funnel = %+v", f)
		}
		var p report.Push
		getJSON(t, base+"/api/push?from=-1d", &p)
		if len(p.Platforms) != 1 || p.Platforms[0].SuccessRate != 0.9 || p.Failures[0].Reason != "quota" {
			t.Errorf("push = %+v", p)
		}
		code, _, body := get(t, base+"/api/push?from=-1d&format=csv")
		if code != http.StatusOK || !strings.Contains(body, "push_failed,fcm,quota,1\n") {
			t.Errorf("push CSV = %d %q", code, body)
		}
		var d report.DAU
		getJSON(t, base+"/api/dau?from=2026-02-09&to=2026-02-11", &d)
		if len(d.Groups) != 1 || d.Groups[0].Peak != 42 || len(d.Groups[0].Points) != 2 {
			t.Errorf("dau = %+v", d)
		}
		code, _, body = get(t, base+"/api/dau?from=2026-02-10&to=2026-02-11&group=app&format=csv")
		if code != http.StatusOK || body != "day,app,users\n2026-02-10,chat,42\n" {
			t.Errorf("dau CSV = %d %q", code, body)
		}
	})
	t.Run("metrics and dimensions", func(t *testing.T) {
		t.Parallel()
		var m struct {
			Metrics []report.Metric `json:"metrics"`
			Funnel  []string        `json:"funnel"`
		}
		getJSON(t, base+"/api/metrics", &m)
		if len(m.Metrics) != len(report.Metrics()) || len(m.Funnel) != 6 || m.Metrics[0].Name != counters.MessagesSent {
			t.Errorf("metrics = %+v", m)
		}
		var d report.Dimensions
		getJSON(t, base+"/api/dimensions?from=-2d", &d)
		if len(d.Apps) != 2 || len(d.Platforms) != 1 {
			t.Errorf("dimensions = %+v", d)
		}
	})
	t.Run("pages and assets", func(t *testing.T) {
		t.Parallel()
		code, hd, body := get(t, base+"/")
		if code != http.StatusOK || !strings.Contains(body, `<main id="charts"`) ||
			!strings.Contains(hd.Get("Content-Security-Policy"), "script-src 'self'") || hd.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET / = %d %v", code, hd)
		}
		for _, asset := range []string{"/assets/app.js", "/assets/style.css"} {
			if code, _, body := get(t, base+asset); code != http.StatusOK || len(body) < 1000 {
				t.Errorf("GET %s = %d, %d bytes", asset, code, len(body))
			}
		}
		for _, path := range []string{"/assets/", "/assets/nope.js", "/favicon.ico"} {
			if code, _, _ := get(t, base+path); code != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", path, code)
			}
		}
	})
	t.Run("injection attempts are values", func(t *testing.T) {
		t.Parallel()
		for _, v := range []string{"' OR '1'='1", "chat' --", "x'); DROP TABLE counters_day; --"} {
			for _, p := range []string{"app", "platform", "reason"} {
				var s report.Series
				getJSON(t, base+"/api/series?metric=messages_sent&from=-1d&"+p+"="+url.QueryEscape(v), &s)
				if s.Total != 0 {
					t.Errorf("%s=%q matched %d", p, v, s.Total)
				}
			}
		}
		var s report.Series
		getJSON(t, base+"/api/series?metric=messages_sent&from=-1d", &s)
		if s.Total != 16 {
			t.Errorf("after the attempts, total = %d, want 16", s.Total)
		}
	})
}

func TestAPIBadParameters(t *testing.T) {
	t.Parallel()
	_, base := apiBundle(t)
	tests := []struct {
		path  string
		param string
	}{
		{"/api/series", "metric"},
		{"/api/series?metric=Messages-Sent", "metric"},
		{"/api/series?metric=messages_sent&from=yesterday", "from"},
		{"/api/series?metric=messages_sent&to=2026-02-30", "to"},
		{"/api/series?metric=messages_sent&from=now&to=-1h", "from"},
		{"/api/series?metric=messages_sent&step=week", "step"},
		{"/api/series?metric=messages_sent&step=minute&from=-30d", "step"},
		{"/api/series?metric=messages_sent&group=user", "group"},
		{"/api/series?metric=messages_sent&tz=Mars/Olympus", "tz"},
		{"/api/series?metric=messages_sent&tz=Local", "tz"},
		{"/api/series?metric=messages_sent&live=yes", "live"},
		{"/api/series?metric=messages_sent&plattform=fcm", "plattform"}, // a misspelt filter
		{"/api/series?metric=messages_sent&metric=reads", "metric"},
		{"/api/series?metric=messages_sent&format=xml", "format"},
		{"/api/series?metric=messages_sent&app=" + strings.Repeat("a", 300), "app"},
		{"/api/totals?metric=messages_sent,Bad", "metric"},
		{"/api/funnel?reason=x", "reason"},
		{"/api/push?from=-1x", "from"},
		{"/api/dau?group=platform", "group"},
		{"/api/dau?from=-100000d", "from"},
		{"/api/metrics?from=-1d", "from"},
	}
	for _, tt := range tests {
		code, hd, body := get(t, base+tt.path)
		var e struct {
			Error string `json:"error"`
			Param string `json:"param"`
		}
		_ = json.Unmarshal([]byte(body), &e)
		if code != http.StatusBadRequest || e.Param != tt.param || !strings.HasPrefix(e.Error, tt.param+": ") ||
			!strings.HasPrefix(hd.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s = %d %s, want 400 naming %q", tt.path, code, body, tt.param)
		}
	}
	if code, _, _ := get(t, base+"/api/nope"); code != http.StatusNotFound {
		t.Errorf("GET /api/nope = %d, want 404", code)
	}
}

func TestQueuesUI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, ts := b.server(t, report.ServerConfig{Token: testToken, Queues: listedQueues, QueuesReadOnly: true})
	for _, path := range []string{"/queues", "/queues/", "/queues/servers"} {
		code, _, body := get(t, ts.URL+path, bearer(testToken)...)
		if code != http.StatusOK || !strings.Contains(body, "<title>Asynq - Monitoring</title>") || !strings.Contains(body, `href="/queues/favicon.ico"`) {
			t.Errorf("GET %s = %d %.300s, want asynqmon's page", path, code, body)
		}
	}
	// asynqmon's API, on the real Redis (it answers JSON as text/plain).
	code, _, body := get(t, ts.URL+"/queues/api/queues", bearer(testToken)...)
	if code != http.StatusOK || !json.Valid([]byte(body)) || !strings.Contains(body, `"queues"`) {
		t.Errorf("GET /queues/api/queues = %d %.300s", code, body)
	}
	req, _ := http.NewRequest(http.MethodDelete, ts.URL+"/queues/api/queues/default", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE on a read-only queues UI = %d, want 405", res.StatusCode)
	}
	if code, _, _ := get(t, ts.URL+"/queues"); code != http.StatusUnauthorized {
		t.Errorf("GET /queues without auth = %d, want 401", code)
	}
}

// A query string that does not parse is refused, never read in part: Go's
// parser drops a pair with a raw ';' (and the pairs after a bad escape),
// which would silently widen a report by its filter.
func TestAPIRefusesUnparsableQuery(t *testing.T) {
	t.Parallel()
	_, base := apiBundle(t)
	// What the filter would have hidden: the unfiltered total is 16.
	var tot report.Totals
	getJSON(t, base+"/api/totals?metric=messages_sent&from=-1d&app=nosuchapp", &tot)
	if len(tot.Totals) != 1 || tot.Totals[0].Value != 0 {
		t.Fatalf("totals of nosuchapp = %+v, want 0", tot.Totals)
	}
	for _, path := range []string{
		"/api/totals?metric=messages_sent&from=-1d&app=nosuchapp;x",
		"/api/totals?metric=messages_sent&from=-1d&app=nosuchapp&x;y",
		"/api/series?metric=messages_sent&app=%zz",
		"/api/funnel?app=chat;",
		"/api/push?;",
		"/api/dau?app=a;b",
		"/api/metrics?a;b",
		"/api/dimensions?from=-1d;",
		"/api/nope?a;b",
	} {
		code, hd, body := get(t, base+path)
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal([]byte(body), &e)
		if code != http.StatusBadRequest || !strings.Contains(e.Error, "query string") ||
			!strings.HasPrefix(hd.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s = %d %s, want 400 saying the query string does not parse", path, code, body)
		}
	}
}

// Without auth (loopback only), a page of another site whose name the
// attacker rebinds to 127.0.0.1 reaches the server with its own name in
// Host: every such request is refused. With auth, any Host is served.
func TestNoAuthRefusesForeignHost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	queues := listedQueues
	_, open := b.server(t, report.ServerConfig{Queues: queues})
	_, locked := b.server(t, report.ServerConfig{Token: testToken, Queues: queues})
	do := func(base, method, path, host string) (int, string) {
		t.Helper()
		code, _, body := send(t, method, base+path, "Host", host, "Authorization", "Bearer "+testToken)
		return code, body
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(open.URL, "http://"))
	paths := []string{"/", "/api/metrics", "/queues/", "/queues/api/queues", "/login", "/healthz", "/assets/app.js"}
	for _, host := range []string{"rebind.attacker.example", "rebind.attacker.example:" + port, "localhost.attacker.example",
		"127.0.0.1.attacker.example", "0.0.0.0:" + port, "192.0.2.1"} {
		for _, path := range paths {
			if code, body := do(open.URL, http.MethodGet, path, host); code != http.StatusMisdirectedRequest || !strings.Contains(body, "Host") {
				t.Errorf("no auth: GET %s with Host %s = %d %.100s, want 421", path, host, code, body)
			}
		}
		if code, _ := do(open.URL, http.MethodDelete, "/queues/api/queues/no-such-queue-of-the-rebind-test", host); code != http.StatusMisdirectedRequest {
			t.Errorf("no auth: DELETE a queue with Host %s = %d, want 421", host, code)
		}
		if code, _ := do(locked.URL, http.MethodGet, "/api/metrics", host); code != http.StatusOK {
			t.Errorf("with auth: GET /api/metrics with Host %s = %d, want 200", host, code)
		}
	}
	for _, host := range []string{"localhost", "localhost:" + port, "LOCALHOST:" + port, "127.0.0.1", "127.0.0.1:" + port, "[::1]", "[::1]:" + port} {
		for _, path := range paths {
			if code, body := do(open.URL, http.MethodGet, path, host); code != http.StatusOK {
				t.Errorf("no auth: GET %s with Host %s = %d %.100s, want 200", path, host, code, body)
			}
		}
	}
}

// /queues (asynqmon's page) gets a Content-Security-Policy as tight as
// asynqmon works under: its two inline scripts by hash, never
// 'unsafe-inline' or 'unsafe-eval' for scripts, nothing from another
// origin (its links to Google Fonts are taken out), and the dashboard's
// other security headers.
func TestQueuesCSP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, ts := b.server(t, report.ServerConfig{Token: testToken, Queues: listedQueues})
	for _, path := range []string{"/queues", "/queues/", "/queues/servers", "/queues/queues/default"} {
		code, hd, body := get(t, ts.URL+path, bearer(testToken)...)
		if code != http.StatusOK || !strings.Contains(body, "<title>Asynq - Monitoring</title>") {
			t.Fatalf("GET %s = %d %.200s", path, code, body)
		}
		csp := hd.Get("Content-Security-Policy")
		directives := map[string]string{}
		for d := range strings.SplitSeq(csp, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
			directives[name] = value
		}
		script := directives["script-src"]
		if script == "" || strings.Contains(script, "unsafe") || strings.Contains(script, "*") || strings.Contains(script, "http") {
			t.Errorf("GET %s: script-src %q, want 'self' and hashes only", path, script)
		}
		for _, d := range []string{"default-src", "style-src", "img-src", "connect-src", "font-src"} {
			if v := directives[d]; v == "" || strings.Contains(v, "http") || strings.Contains(v, "*") {
				t.Errorf("GET %s: %s %q, want this origin only", path, d, v)
			}
		}
		if directives["frame-ancestors"] != "'none'" || directives["base-uri"] != "'none'" || directives["object-src"] != "'none'" {
			t.Errorf("GET %s: CSP %q lacks frame-ancestors, base-uri or object-src 'none'", path, csp)
		}
		scripts := inlineScripts(t, body)
		if len(scripts) != 2 {
			t.Errorf("GET %s: %d inline scripts, want asynqmon's 2", path, len(scripts))
		}
		for _, s := range scripts {
			sum := sha256.Sum256([]byte(s))
			if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(script, h) {
				t.Errorf("GET %s: inline script %.60q not allowed by script-src %q", path, s, script)
			}
		}
		if strings.Contains(body, "https://") || strings.Contains(body, "http://") {
			t.Errorf("GET %s: the page still loads something from another origin: %s", path, body)
		}
		for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
			if hd.Get(k) != want {
				t.Errorf("GET %s: %s = %q, want %q", path, k, hd.Get(k), want)
			}
		}
	}
	// The API and the assets carry the policy too.
	for _, path := range []string{"/queues/api/queues", "/queues/favicon.ico"} {
		if code, hd, _ := get(t, ts.URL+path, bearer(testToken)...); code != http.StatusOK || hd.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s = %d, CSP %q", path, code, hd.Get("Content-Security-Policy"))
		}
	}
}

// inlineScripts returns the text of the <script> elements of page that
// have no src.
func inlineScripts(t *testing.T, page string) []string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range findAll(doc, func(n *html.Node) bool { return n.Data == "script" && attr(n, "src") == "" }) {
		var sb strings.Builder
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			sb.WriteString(c.Data)
		}
		out = append(out, sb.String())
	}
	return out
}
