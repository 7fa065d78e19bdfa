package report_test

import (
	"bytes"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/browsertest"
	"github.com/nudgehq/nudge/report"
)

// The browser test loads the dashboard in headless Chromium (no driver,
// no new dependency: --dump-dom prints the DOM once the page's fetches are
// done and its virtual time budget is spent) and checks the numbers the
// charts show against the counters it stored.
//
// internal/browsertest finds (or installs) Chromium and runs it.
//
// NUDGE_SCREENSHOT=path saves a screenshot of the dashboard there (the
// repository's docs/dashboard.png is made so); by default it goes to a
// temporary directory.

func chromium(t *testing.T) string { return browsertest.Chromium(t) }

func runChromium(t *testing.T, bin, url string, extra ...string) []byte {
	return browsertest.Run(t, bin, url, extra...)
}

func runChromiumLog(t *testing.T, bin, url string, extra ...string) ([]byte, string) {
	return browsertest.RunLog(t, bin, url, extra...)
}

// dashboardData is a week of counters and active users shaped like real
// traffic: a daily rhythm, two apps, two push platforms. It returns the
// samples and the sum of each metric.
func dashboardData(from time.Time, hours int) ([]sample, map[string]int64) {
	var samples []sample
	sums := map[string]int64{}
	add := func(ts time.Time, d counters.Dims, v int64) {
		if v <= 0 {
			return
		}
		samples = append(samples, sample{ts, d, v})
		sums[d.Metric] += v
	}
	for h := range hours {
		ts := from.Add(time.Duration(h)*time.Hour + 17*time.Minute)
		// Busy afternoons, quiet nights, a slow weekend.
		daily := 0.55 + 0.45*math.Sin(2*math.Pi*float64(h%24-9)/24)
		if wd := ts.Weekday(); wd == time.Saturday || wd == time.Sunday {
			daily *= 0.6
		}
		for i, app := range []string{"chat", "shop"} {
			scale := []float64{420, 130}[i] * daily
			messages := int64(scale + float64((h*7+i*3)%23))
			opened := messages * 3 / 5
			scheduled := opened * 7 / 10
			cancelled := scheduled * 2 / 5
			suppressed := scheduled / 10
			sent := scheduled - cancelled - suppressed
			dims := func(metric string) counters.Dims { return counters.Dims{Metric: metric, App: app} }
			add(ts, dims(counters.MessagesSent), messages)
			add(ts, dims(counters.RecipientsFanned), messages*3+int64(h%5))
			add(ts, dims(counters.EpisodesOpened), opened)
			add(ts, dims(counters.EpisodesClosed), opened*4/5)
			add(ts, dims(counters.RemindersQueued), scheduled)
			add(ts, dims(counters.RemindersCancel), cancelled)
			add(ts, counters.Dims{Metric: counters.RemindersSuppr, App: app, Reason: "quiet_hours"}, suppressed*2/3)
			add(ts, counters.Dims{Metric: counters.RemindersSuppr, App: app, Reason: "muted"}, suppressed-suppressed*2/3)
			add(ts, dims(counters.RemindersSent), sent)
			// What the reminders did, by stage: stage 1 is most of them.
			first := sent * 3 / 4
			stage := func(metric, platform, reason string, n int64) {
				add(ts, counters.Dims{Metric: metric, App: app, Platform: platform, Reason: reason}, n)
				if metric == counters.RemindersPushed && reason == "2" && n > 0 {
					sums[metric+"/2"] += n
				}
			}
			stage(counters.RemindersPushed, "fcm", "1", first)
			stage(counters.RemindersPushed, "apns", "2", sent-first)
			stage(counters.RemindersOpened, "fcm", "1", first/3)
			stage(counters.RemindersConverted, "fcm", "1", first/4)
			stage(counters.ReadDelay, "fcm", "1:60", first/8)
			stage(counters.ReadDelay, "fcm", "1:300", first/4-first/8)
			if h%6 == 0 { // a little bad input, now and then
				add(ts, counters.Dims{Metric: counters.DeadLettered, App: app, Reason: "invalid_json"}, int64(1+i))
				add(ts, counters.Dims{Metric: counters.DeadLettered, App: app, Reason: "unknown_type"}, int64(h%4))
			}
			for j, platform := range []string{"fcm", "apns"} {
				devices := sent * int64(3-j) / 3
				failed := devices * int64(2+j*3) / 100
				add(ts, counters.Dims{Metric: counters.PushSent, App: app, Platform: platform}, devices-failed)
				add(ts, counters.Dims{Metric: counters.PushFailed, App: app, Platform: platform, Reason: "unregistered"}, failed/2)
				add(ts, counters.Dims{Metric: counters.PushFailed, App: app, Platform: platform, Reason: "unavailable"}, failed-failed/2)
				add(ts, counters.Dims{Metric: counters.TokensRemoved, App: app, Platform: platform, Reason: "unregistered"}, failed/2)
			}
		}
	}
	return samples, sums
}

func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	b := setup(t)
	from := at("2026-03-02T00:00:00Z")
	samples, sums := dashboardData(from, 7*24)
	b.insert(t, samples...)
	dau := map[string]int64{}
	var peak, latest int64
	for d := range 7 {
		day := from.AddDate(0, 0, d).Format(time.DateOnly)
		total := int64(0)
		for i, app := range []string{"chat", "shop"} {
			n := int64([]int{5200, 1400}[i] + d*137*(1-i) + (d%3)*40)
			b.setDAU(t, day, app, n)
			total += n
		}
		dau[day] = total
		peak, latest = max(peak, total), total
	}
	_, ts := b.server(t, report.ServerConfig{Queues: listedQueues})
	page := ts.URL + "/?from=2026-03-02T00:00:00Z&to=2026-03-09T00:00:00Z&step=hour&tz=UTC"

	doc, err := html.Parse(bytes.NewReader(runChromium(t, bin, page, "--dump-dom")))
	if err != nil {
		t.Fatal(err)
	}
	body := find(doc, func(n *html.Node) bool { return n.Data == "body" })
	if body == nil || attr(body, "data-state") != "ready" {
		status := find(doc, byID("status"))
		t.Fatalf("dashboard not ready: body data-state %q, status %q", attr(body, "data-state"), text(status))
	}
	section := func(id string) *html.Node {
		t.Helper()
		n := find(doc, byID("chart-"+id))
		if n == nil {
			t.Fatalf("no chart %s", id)
		}
		if s := attr(n, "data-state"); s != "ready" {
			t.Errorf("chart %s: data-state %q, message %q", id, s, text(n))
		}
		if find(n, func(n *html.Node) bool { return n.Data == "svg" }) == nil {
			t.Errorf("chart %s has no SVG", id)
		}
		return n
	}
	// valueAxis checks the value scale of a line or bar chart: a baseline,
	// four grid lines above it and a label at each, right aligned at x = 40
	// (the charts' left margin, 46, less 6), the first 0.
	valueAxis := func(sec *html.Node) {
		t.Helper()
		axis := find(sec, func(n *html.Node) bool { return n.Data == "g" && attr(n, "class") == "axis" })
		if axis == nil {
			t.Errorf("chart %s has no axis", attr(sec, "id"))
			return
		}
		base := findAll(axis, func(n *html.Node) bool { return n.Data == "line" && attr(n, "class") == "baseline" })
		labels := findAll(axis, func(n *html.Node) bool {
			return n.Data == "text" && attr(n, "x") == "40" && attr(n, "text-anchor") == "end"
		})
		if len(base) != 1 || len(labels) != 5 || text(labels[0]) != "0" {
			t.Errorf("chart %s: value axis with %d baselines and labels %v, want 1 and 5 from 0", attr(sec, "id"), len(base), texts(labels))
		}
	}
	// output returns the number an <output> of sec shows for key=value.
	output := func(sec *html.Node, key, value string) int64 {
		t.Helper()
		n := find(sec, func(n *html.Node) bool { return n.Data == "output" && attr(n, key) == value })
		if n == nil {
			t.Fatalf("chart %s has no output with %s=%s", attr(sec, "id"), key, value)
		}
		v, err := strconv.ParseInt(attr(n, "data-value"), 10, 64)
		if err != nil {
			t.Fatalf("output %s=%s: data-value %q", key, value, attr(n, "data-value"))
		}
		if shown := strings.ReplaceAll(text(n), ",", ""); shown != strconv.FormatInt(v, 10) {
			t.Errorf("output %s=%s shows %q, data-value %d", key, value, text(n), v)
		}
		return v
	}
	expect := func(what string, got, want int64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", what, got, want)
		}
	}

	// The header says which role this session holds (no auth: a reader,
	// whose queues UI is read-only).
	if role := find(doc, byID("role")); attr(role, "data-role") != "reader" || !strings.Contains(text(role), "reader") ||
		!strings.Contains(text(role), "queues read-only") {
		t.Errorf("role indicator: data-role %q, text %q; want reader, queues read-only", attr(role, "data-role"), text(role))
	}

	// Without auth there is nothing to sign out of: no Sign out button.
	if find(doc, byID("signout")) != nil {
		t.Error("a Sign out button on a server without auth")
	}

	for _, c := range []struct{ id, metric string }{{"messages", counters.MessagesSent}, {"recipients", counters.RecipientsFanned}} {
		sec := section(c.id)
		total, _ := strconv.ParseInt(attr(sec, "data-total"), 10, 64)
		expect(c.id+" data-total", total, sums[c.metric])
		expect(c.id+" shown total", output(sec, "data-metric", c.metric), sums[c.metric])
		expect(c.id+" points", int64(len(findAll(sec, func(n *html.Node) bool { return n.Data == "tr" && parentIs(n, "tbody") }))), 7*24)
		if attr(sec, "data-source") != "counters_hour" {
			t.Errorf("%s source = %q", c.id, attr(sec, "data-source"))
		}
	}
	episodes := section("episodes")
	valueAxis(episodes)
	expect("episodes opened", output(episodes, "data-metric", counters.EpisodesOpened), sums[counters.EpisodesOpened])
	expect("episodes closed", output(episodes, "data-metric", counters.EpisodesClosed), sums[counters.EpisodesClosed])

	funnel := section("funnel")
	for _, m := range report.FunnelMetrics {
		expect("funnel "+m, output(funnel, "data-metric", m), sums[m])
	}

	// Every percentage of the funnel is a part of a total that includes it,
	// and names it; reminders scheduled (every stage) has none.
	for _, o := range findAll(funnel, func(n *html.Node) bool { return n.Data == "output" && strings.Contains(attr(n, "class"), "share") }) {
		v, err := strconv.ParseFloat(attr(o, "data-value"), 64)
		m, base, shown := attr(o, "data-metric"), attr(o, "data-base"), text(o)
		switch {
		case err != nil || v < 0 || v > 1:
			t.Errorf("funnel %s share %q: want 0 to 1", m, attr(o, "data-value"))
		case base == "" && shown != "–":
			t.Errorf("funnel %s shows %q with no base", m, shown)
		case base != "" && (!strings.HasSuffix(shown, "%") || !strings.Contains(text(funnel), "of "+base)):
			t.Errorf("funnel %s shows %q of %q, and the chart must name its base", m, shown, base)
		}
		if m == counters.RemindersQueued && base != "" {
			t.Errorf("reminders scheduled has a share of %q", base)
		}
	}

	effect := section("effect")
	valueAxis(effect)
	expect("pushed", output(effect, "data-metric", counters.RemindersPushed), sums[counters.RemindersPushed])
	expect("opened", output(effect, "data-metric", counters.RemindersOpened), sums[counters.RemindersOpened])
	expect("converted", output(effect, "data-metric", counters.RemindersConverted), sums[counters.RemindersConverted])
	rateOf := func(stage, kind string) float64 {
		n := find(effect, func(n *html.Node) bool {
			return n.Data == "output" && attr(n, "data-stage") == stage && attr(n, "data-kind") == kind
		})
		v, err := strconv.ParseFloat(attr(n, "data-value"), 64)
		if n == nil || err != nil || !strings.HasSuffix(text(n), "%") {
			t.Fatalf("stage %s %s rate: %q", stage, kind, text(n))
		}
		return v
	}
	if got, want := rateOf("1", "conversion"), float64(sums[counters.RemindersConverted])/float64(sums[counters.RemindersPushed]-sums[counters.RemindersPushed+"/2"]); math.Abs(got-want) > 1e-3 {
		t.Errorf("stage 1 conversion rate %v, want %v", got, want)
	}
	if got := rateOf("2", "open"); got != 0 {
		t.Errorf("stage 2 open rate %v, want 0", got)
	}
	median := find(effect, func(n *html.Node) bool {
		return n.Data == "output" && attr(n, "class") == "median" && attr(n, "data-stage") == "1"
	})
	if v, _ := strconv.ParseFloat(attr(median, "data-value"), 64); v <= 30 || v > 300 || text(median) != "2 min" {
		t.Errorf("stage 1 median push → read: %q (%v), want between 30 s and 5 min", text(median), v)
	}

	push := section("push")
	valueAxis(push)
	expect("push sent", output(push, "data-metric", counters.PushSent), sums[counters.PushSent])
	expect("push failed", output(push, "data-metric", counters.PushFailed), sums[counters.PushFailed])
	for _, platform := range []string{"fcm", "apns"} {
		rate := find(push, func(n *html.Node) bool { return n.Data == "output" && attr(n, "data-platform") == platform })
		sent, _ := strconv.ParseFloat(attr(rate, "data-sent"), 64)
		failed, _ := strconv.ParseFloat(attr(rate, "data-failed"), 64)
		got, _ := strconv.ParseFloat(attr(rate, "data-value"), 64)
		if sent == 0 || math.Abs(got-sent/(sent+failed)) > 1e-4 || !strings.HasSuffix(text(rate), "%") {
			t.Errorf("%s success rate: %q (sent %v, failed %v)", platform, text(rate), sent, failed)
		}
	}

	dead := section("deadletters")
	expect("dead letters", output(dead, "data-metric", counters.DeadLettered), sums[counters.DeadLettered])
	if rows := findAll(dead, func(n *html.Node) bool { return n.Data == "tr" && parentIs(n, "tbody") }); len(rows) != 2 {
		t.Errorf("dead letters by reason: %d rows, want 2", len(rows))
	} else if first := text(rows[0]); !strings.Contains(first, "invalid_json") || !strings.Contains(first, "not a JSON object") {
		t.Errorf("dead letters by reason: first row %q; want invalid_json, explained", first)
	}

	dauSec := section("dau")
	valueAxis(dauSec)
	expect("dau peak", output(dauSec, "data-key", "peak"), peak)
	expect("dau latest", output(dauSec, "data-key", "latest"), latest)

	// A screenshot for people (docs/dashboard.png) and a check that the
	// page paints.
	shot := os.Getenv("NUDGE_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "dashboard.png")
	}
	runChromium(t, bin, page, "--screenshot="+shot, "--window-size="+windowSize())
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 20_000 {
		t.Errorf("screenshot %s: %d bytes, not a painted PNG", shot, len(png))
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// Live: counters still in Redis show, marked, when the toggle is on.
	b.add(t, 1, at("2026-03-08T23:30:00Z"), msg("chat"), 1000)
	doc, err = html.Parse(bytes.NewReader(runChromium(t, bin, page+"&live=1", "--dump-dom")))
	if err != nil {
		t.Fatal(err)
	}
	if find(doc, func(n *html.Node) bool { return n.Data == "body" && attr(n, "data-state") == "ready" }) == nil {
		t.Fatalf("live dashboard not ready: %s", text(find(doc, byID("status"))))
	}
	if status := text(find(doc, byID("status"))); !strings.Contains(status, "live, refreshing") {
		t.Errorf("live toggle not on: status %q", status)
	}
	messages := find(doc, byID("chart-messages"))
	total, _ := strconv.ParseInt(attr(messages, "data-total"), 10, 64)
	expect("live messages total", total, sums[counters.MessagesSent]+1000)
	liveRows := findAll(messages, func(n *html.Node) bool { return n.Data == "tr" && attr(n, "class") == "live" })
	if len(liveRows) != 1 || !strings.Contains(text(liveRows[0]), "08 Mar 2026, 23:00") {
		t.Errorf("live rows of messages: %d, want the one of 08 Mar 23:00", len(liveRows))
	}
}

// windowSize is the screenshot's: 1280x900, or $NUDGE_SCREENSHOT_SIZE.
func windowSize() string {
	if s := os.Getenv("NUDGE_SCREENSHOT_SIZE"); s != "" {
		return s
	}
	return "1280,900"
}

// ------------------------------------------------------------ DOM helpers

// The DOM helpers of internal/browsertest.
var (
	attr = browsertest.Attr
	byID = browsertest.ByID
	find = browsertest.Find
	text = browsertest.Text
)

func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func texts(ns []*html.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = text(n)
	}
	return out
}

func parentIs(n *html.Node, tag string) bool { return n.Parent != nil && n.Parent.Data == tag }

// TestQueuesInBrowser opens asynqmon at /queues in headless Chromium under
// the Content-Security-Policy the server sends: the app must render (its
// queue list, from the real Redis) and the console must show no violation
// of the policy.
func TestQueuesInBrowser(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	b := setup(t)
	_, ts := b.server(t, report.ServerConfig{Queues: listedQueues})
	if code, hd, _ := get(t, ts.URL+"/queues/"); code != http.StatusOK || hd.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET /queues/ = %d, CSP %q: want a policy to test", code, hd.Get("Content-Security-Policy"))
	}
	if code, _, body := get(t, ts.URL+"/queues/api/queues"); code != http.StatusOK || !strings.Contains(body, `"queue":"`+listedQueue+`"`) {
		t.Fatalf("GET /queues/api/queues = %d, want the queue %s listed: %.500s", code, listedQueue, body)
	}
	for _, path := range []string{"/queues/", "/queues/servers"} {
		out, log := runChromiumLog(t, bin, ts.URL+path, "--dump-dom", "--enable-logging=stderr", "--v=0")
		for line := range strings.SplitSeq(log, "\n") {
			if strings.Contains(line, "Content Security Policy") || strings.Contains(line, "Content-Security-Policy") {
				t.Errorf("%s: CSP violation: %s", path, line)
			}
		}
		doc, err := html.Parse(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		root := find(doc, byID("root"))
		if root == nil || root.FirstChild == nil {
			t.Fatalf("%s: asynqmon did not render into #root:\n%.2000s\nlog:\n%s", path, out, browsertest.LastLines(log, 20))
		}
		if txt := text(root); !strings.Contains(txt, "Queues") || !strings.Contains(txt, "Servers") {
			t.Errorf("%s: rendered page lacks asynqmon's navigation: %.500s", path, txt)
		}
		if txt := text(root); path == "/queues/" && !strings.Contains(txt, listedQueue) {
			t.Errorf("%s: the queue %s is not listed: %.500s", path, listedQueue, txt)
		}
	}
}
