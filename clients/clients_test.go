// Package clients holds Nudge's producer packages for the languages chat
// back ends are written in: clients/node (ESM with TypeScript types, for
// node-redis and ioredis) and clients/php (Composer, for phpredis and
// Predis). This test runs each package's own tests against the real Redis
// beside a real ingest process, then checks that ingest applied exactly
// what they published: every event once, a retry with the same id once, no
// dead letter. scripts/clients.sh installs Node, PHP, phpredis and Predis
// from Debian's packages and node-redis and ioredis from npm (the
// lockfile); scripts/test.sh runs it first.
package clients_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

func TestMain(m *testing.M) { buildtest.Main(m) }

const shards = 4

// need fails the test when a tool the clients' tests run with is missing.
func need(t *testing.T, path, install string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if _, err := exec.LookPath(path); err != nil {
			t.Fatalf("%s is missing: run scripts/clients.sh (%s)", path, install)
		}
	}
}

// report is what a client's tests published.
type report struct {
	Distinct int `json:"distinct"` // event ids
	Entries  int `json:"entries"`  // stream entries added (a retry adds one more)
}

// runClient starts ingest on a fresh prefix, runs a client's tests against
// it, and checks that ingest applied what they report.
func runClient(t *testing.T, dir string, name string, args ...string) {
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, shards)
	ingest := exec.Command(buildtest.Command(t, "../cmd/ingest"), "-redis-url", "redis://"+redistest.Addr()+"/0", "-prefix", prefix,
		"-shards", strconv.Itoa(shards), "-consumer", "clients", "-reminders=false", "-log-level", "warn", "-metrics-addr", freeport.Addr(t))
	ingest.Stdout, ingest.Stderr = t.Output(), t.Output()
	if err := ingest.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ingest.Process.Kill(); _ = ingest.Wait() })

	host, port, _ := strings.Cut(redistest.Addr(), ":")
	reportFile := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NUDGE_TEST_REDIS_URL=redis://"+redistest.Addr()+"/0", "NUDGE_TEST_REDIS_HOST="+host,
		"NUDGE_TEST_REDIS_PORT="+port, "NUDGE_TEST_PREFIX="+prefix, "NUDGE_TEST_SHARDS="+strconv.Itoa(shards), "NUDGE_TEST_REPORT="+reportFile)
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s:\n%s", name, strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("the client's tests failed: %v", err)
	}
	raw, err := os.ReadFile(reportFile)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(raw, &r); err != nil || r.Distinct == 0 || r.Entries < r.Distinct {
		t.Fatalf("report %s: %v", raw, err)
	}

	// Ingest applies every event once; the retry's second entry is a duplicate.
	ctx := context.Background()
	totals := func() map[string]int64 {
		out := map[string]int64{}
		for s := range shards {
			mins, _ := rdb.ZRange(ctx, ks.CounterIndex(s), 0, -1).Result()
			for _, m := range mins {
				n, _ := strconv.ParseInt(m, 10, 64)
				h, _ := rdb.HGetAll(ctx, ks.Counters(s, n)).Result()
				for f, v := range h {
					d, err := counters.ParseField(f)
					if err != nil {
						continue
					}
					x, _ := strconv.ParseInt(v, 10, 64)
					out[d.Metric] += x
				}
			}
		}
		return out
	}
	want := map[string]int64{"events_applied": int64(r.Distinct), "duplicates": int64(r.Entries - r.Distinct), "dead_lettered": 0}
	poll.UntilState(t, 20*time.Second, "ingest to count "+name+"'s events", func() (bool, string) {
		got := totals()
		for m, n := range want {
			if got[m] != n {
				return false, fmt.Sprintf("ingest counted %v, want %v (%s published %d events, %d entries)", got, want, name, r.Distinct, r.Entries)
			}
		}
		return true, ""
	})
	for s := range shards {
		if n := rdb.XLen(ctx, ks.DeadLetter(s)).Val(); n != 0 {
			t.Errorf("shard %d has %d dead letters", s, n)
		}
	}
	t.Logf("%s: %d events applied once each, %d retried entries deduplicated", name, r.Distinct, r.Entries-r.Distinct)
}

func TestNodeProducer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Node and the ingest binary")
	}
	t.Parallel()
	need(t, "node", "Debian package nodejs")
	need(t, "node/node_modules/redis", "npm ci in clients/node")
	need(t, "node/node_modules/ioredis", "npm ci in clients/node")
	runClient(t, "node", "node", "--test", "test/")
}

func TestPHPProducer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PHP and the ingest binary")
	}
	t.Parallel()
	need(t, "php", "Debian package php-cli")
	need(t, "/usr/share/php/Predis/Autoloader.php", "Debian package php-nrk-predis")
	out, err := exec.Command("php", "-m").Output()
	if err != nil || !regexp.MustCompile(`(?m)^redis$`).Match(out) {
		t.Fatalf("the PHP extension redis (phpredis) is missing: run scripts/clients.sh (Debian package php-redis): %v", err)
	}
	runClient(t, "php", "php", "tests/run.php")
}

// docs/events.md shows each package's own example, as its tests run it.
func TestDocsShowTheTestedExamples(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, lang string }{{"node/examples/publish.js", "js"}, {"php/examples/publish.php", "php"}} {
		ex, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		block := fmt.Sprintf("```%s\n%s```", tc.lang, ex)
		if !strings.Contains(string(doc), block) {
			t.Errorf("docs/events.md does not show clients/%s as it is; paste it in a ```%s block:\n%s", tc.file, tc.lang, block)
		}
	}
}
