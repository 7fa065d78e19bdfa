package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/net/html"

	"github.com/nudgehq/nudge/internal/browsertest"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// The README's main command works, the way a person meets it: the demo
// runs every process, traffic flows, reminders reach the push sandbox and
// counters reach Postgres; the dashboard link it prints, opened as is in
// headless Chromium, signs the browser in and every chart draws; the
// banner's redis-cli example, pasted as is, gets its push at the banner's
// sandbox link. The services' NUDGE_* variables, exported with
// production-looking values, change nothing: the demo touches no key
// outside its prefix and no other database, and leaves no key behind.
//
// Not parallel: it exports those variables (t.Setenv).
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole pipeline for 80s")
	}
	chromium := browsertest.Chromium(t)
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	prefix := redistest.RandomPrefix()
	rdb, _ := redistest.New(t)
	t.Cleanup(func() {
		redistest.DeletePrefix(t, rdb, prefix+":")
		redistest.DeletePrefix(t, rdb, keys.AsynqQueue(prefix+"-reminders"))
	})
	// "Production": a prefix with data, a database, settings exported.
	prod, prodDB := redistest.RandomPrefix(), pgtest.NewDatabase(t)
	t.Cleanup(func() { redistest.DeletePrefix(t, rdb, prod+":") })
	canary := prod + ":{s0}:events"
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: canary, Values: []any{"event", "production's"}}).Err(); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"NUDGE_REDIS_URL": "redis://" + redistest.Addr() + "/0", "NUDGE_PREFIX": prod,
		"NUDGE_DATABASE_URL": prodDB, "NUDGE_SHARDS": "3", "NUDGE_QUEUE": prod + "-queue"} {
		t.Setenv(k, v)
	}

	var out harness.Buffer
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	fcmAddr := freeport.Addr(t)
	done := make(chan error, 1)
	go func() {
		done <- run(rctx, []string{"-root", "../..", "-duration", "80s", "-check", "-services=false",
			"-redis-url", "redis://" + redistest.Addr() + "/0", "-database-url", db, "-prefix", prefix,
			"-report-addr", freeport.Addr(t), "-sandbox-fcm-addr", fcmAddr, "-sandbox-apns-addr", freeport.Addr(t),
			"-dir", t.TempDir(), "-stages", "5s,20s"}, os.Getenv, &out)
	}()
	var banner string
	deadline := time.Now().Add(3 * time.Minute)
	for banner == "" {
		if _, rest, ok := strings.Cut(out.String(), "Nudge is running."); ok && strings.Contains(rest, "change ids to send again") {
			banner = rest
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the demo ended before its banner: %v\n%s", err, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner after 3 minutes:\n%s", out.String())
		}
	}
	var link, pushes, another string
	var pastes []string
	lines := strings.Split(banner, "\n")
	for i, line := range lines {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "Another browser: ") && i+1 < len(lines):
			another = strings.TrimSuffix(strings.TrimPrefix(line, "Another browser: "), "\\") + lines[i+1]
		case strings.Contains(line, "/login?"):
			link = line
		case strings.HasPrefix(line, "redis-cli "):
			pastes = append(pastes, line)
		case strings.Contains(line, "/sandbox/deliveries?"):
			pushes = line
		}
	}
	if link == "" || len(pastes) != 2 || pushes == "" {
		t.Fatalf("the banner lacks the dashboard link, the two redis-cli lines or the sandbox link:\n%s", banner)
	}
	for _, line := range strings.Split(banner, "\n") {
		if len(line) > 100 && !strings.Contains(line, "redis-cli") && !strings.Contains(line, "http") {
			t.Errorf("banner line of %d columns (want at most 100): %s", len(line), line)
		}
	}

	// The pasted example: exactly as printed, through a shell.
	for _, p := range pastes {
		if b, err := exec.Command("bash", "-c", p).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", p, err, b)
		}
	}
	// Its push shows at the banner's link (the first stage is 5 s).
	poll.Until(t, time.Minute, "the example's push at "+pushes, func() bool {
		res, err := http.Get(pushes)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var got struct {
			Deliveries []struct {
				Body string `json:"body"`
			} `json:"deliveries"`
		}
		return json.NewDecoder(res.Body).Decode(&got) == nil && len(got.Deliveries) == 1 &&
			strings.Contains(got.Deliveries[0].Body, "Hello from redis-cli")
	})

	// The printed link, opened as is, once some traffic was counted.
	doc, err := html.Parse(bytes.NewReader(browsertest.Run(t, chromium, link, "--dump-dom")))
	if err != nil {
		t.Fatal(err)
	}
	body := browsertest.Find(doc, func(n *html.Node) bool { return n.Data == "body" })
	if body == nil || browsertest.Attr(body, "data-state") != "ready" {
		t.Fatalf("the dashboard behind %s is not ready: body data-state %q, status %q", link,
			browsertest.Attr(body, "data-state"), browsertest.Text(browsertest.Find(doc, browsertest.ByID("status"))))
	}
	charts := 0
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if id := browsertest.Attr(n, "id"); strings.HasPrefix(id, "chart-") && n.Data == "section" {
			charts++
			if s := browsertest.Attr(n, "data-state"); s != "ready" {
				t.Errorf("chart %s: data-state %q: %s", id, s, browsertest.Text(n))
			}
			if browsertest.Find(n, func(n *html.Node) bool { return n.Data == "svg" }) == nil {
				t.Errorf("chart %s has no SVG", id)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if charts < 4 {
		t.Errorf("the dashboard drew %d charts", charts)
	}
	if m := browsertest.Find(doc, browsertest.ByID("chart-messages")); strings.Contains(browsertest.Text(m), "No data") {
		t.Errorf("the messages chart shows no data for the demo's traffic: %s", browsertest.Text(m))
	}
	// The command for another browser, as printed, makes another link.
	if b, err := exec.Command("bash", "-c", another).Output(); err != nil || !strings.Contains(string(b), "/login?code=") {
		t.Errorf("%s: %v\n%s", another, err, b)
	}
	// A link is good once.
	res, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("the sign-in link used a second time: %d, want 401", res.StatusCode)
	}

	if err := <-done; err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	// Every line of its own is at most 100 columns, but for those a URL
	// or a command to paste makes longer.
	for _, line := range strings.Split(out.String(), "\n") {
		if len(line) > 100 && !strings.Contains(line, "://") {
			t.Errorf("a line of %d columns: %s", len(line), line)
		}
	}
	if !strings.Contains(out.String(), "In all, after") || strings.Contains(out.String(), "events applied                 0\n") {
		t.Error("the final summary is missing, or counts no event")
	}
	// What the reminders did: the users of the traffic react to pushes.
	if !regexp.MustCompile(`reminders opened +[0-9,]+\n +reminders converted \(read\) +[0-9,]+`).MatchString(out.String()) {
		t.Error("the final summary does not say how many reminders were opened and read")
	}
	// The traffic's bad entries are counted by reason, in words.
	if !regexp.MustCompile(`bad entries dead-lettered +[1-9][0-9,]*: [a-z]`).MatchString(out.String()) {
		t.Error("the final summary shows no dead letter by reason")
	}
	if ps := strings.Contains(out.String(), "-admin-basic-auth") || strings.Contains(out.String(), "admin:"); ps {
		t.Error("the demo shows a password")
	}

	// Production untouched, the demo's keys gone.
	if n, err := rdb.XLen(ctx, canary).Result(); err != nil || n != 1 {
		t.Errorf("production's stream %s: %d entries, %v; want its one entry", canary, n, err)
	}
	if ks, _ := rdb.Keys(ctx, prod+"*").Result(); len(ks) != 1 {
		t.Errorf("keys under production's prefix: %v, want only %s", ks, canary)
	}
	if ks, _ := rdb.Keys(ctx, prefix+":*").Result(); len(ks) != 0 {
		t.Errorf("the demo left %d keys under its prefix, e.g. %s", len(ks), ks[0])
	}
	if ks, _ := rdb.Keys(ctx, keys.AsynqQueue(prefix+"-reminders")+"*").Result(); len(ks) != 0 {
		t.Errorf("the demo left %d keys of its queue, e.g. %s", len(ks), ks[0])
	}
	if rdb.SIsMember(ctx, keys.AsynqQueues, prefix+"-reminders").Val() {
		t.Error("asynq still lists the demo's queue")
	}
	conn, err := pgx.Connect(ctx, prodDB)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&tables); err != nil || tables != 0 {
		t.Errorf("production's database has %d tables (%v): the demo migrated it", tables, err)
	}
}

// The demo runs only on a prefix it made or one without keys: it deletes
// its keys at start and at exit.
func TestDemoRefusesAPrefixItDidNotMake(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, prefix := redistest.New(t)
	someone := prefix + ":{s1}:unread:alice"
	if err := rdb.Set(ctx, someone, "1", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	var out harness.Buffer
	err := run(ctx, []string{"-root", "../..", "-services=false", "-redis-url", "redis://" + redistest.Addr() + "/0",
		"-database-url", pgtest.NewDatabase(t), "-prefix", prefix, "-dir", t.TempDir()}, func(string) string { return "" }, &out)
	if err == nil || !strings.Contains(err.Error(), "did not make") || !strings.Contains(err.Error(), "choose another -prefix") {
		t.Fatalf("demo on someone's prefix: %v, want a refusal", err)
	}
	if v, _ := rdb.Get(ctx, someone).Result(); v != "1" {
		t.Errorf("the refused demo touched %s", someone)
	}
}

// -h prints the settings and is no error.
func TestHelp(t *testing.T) {
	t.Parallel()
	var out harness.Buffer
	if err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("demo -h: %v", err)
	}
}

// The README opens with the two commands a newcomer runs. They must stay
// the ones the tests exercise: the demo (TestDemo runs it) and the test
// script (CI runs it through .ci/run).
func TestReadmeCommands(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```sh\n")
	if !ok {
		t.Fatal("README.md has no sh code block")
	}
	block, _, _ := strings.Cut(rest, "```")
	var cmds []string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		cmd, _, _ := strings.Cut(line, "#")
		cmds = append(cmds, strings.TrimSpace(cmd))
	}
	want := []string{"go run ./cmd/demo", "bash scripts/test.sh"}
	if strings.Join(cmds, "\n") != strings.Join(want, "\n") {
		t.Errorf("README's first commands are %q, want %q (the ones the tests run)", cmds, want)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "bash scripts/test.sh") {
		t.Error(".ci/run does not run the README's test command")
	}
	if _, err := os.Stat("../../scripts/services.sh"); err != nil {
		t.Errorf("the demo and the tests set up services with scripts/services.sh: %v", err)
	}
}
