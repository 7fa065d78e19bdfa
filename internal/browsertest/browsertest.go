// Package browsertest runs headless Chromium for tests: no driver and no
// new dependency. --dump-dom prints the DOM once the page's fetches are
// done and its virtual time budget is spent; the tests read it with
// golang.org/x/net/html.
//
// Chromium is /usr/bin/chromium or $NUDGE_CHROMIUM; when absent, Chromium
// installs it with scripts/services.sh --chromium. A test skips only if
// that fails outside CI; in CI ($CI set) it fails instead.
package browsertest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/nudgehq/nudge/internal/modroot"
)

var (
	once    sync.Once
	path    string
	failure string
)

func find() string {
	if p := os.Getenv("NUDGE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Chromium returns the Chromium binary, installing it once if needed.
func Chromium(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if path = find(); path != "" {
			return
		}
		dir, err := modroot.Dir()
		if err != nil {
			failure = err.Error()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(dir, "scripts", "services.sh"), "--chromium").CombinedOutput()
		if path = find(); path == "" {
			failure = "scripts/services.sh --chromium did not install it: " + strings.TrimSpace(string(out))
			if err != nil {
				failure += " (" + err.Error() + ")"
			}
		}
	})
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("no Chromium, and CI must run the browser test: %s", failure)
		}
		t.Skipf("no Chromium for the browser test: %s", failure)
	}
	return path
}

// Run runs headless Chromium on url with extra flags and returns its
// standard output.
func Run(t testing.TB, bin, url string, extra ...string) []byte {
	t.Helper()
	stdout, _ := RunLog(t, bin, url, extra...)
	return stdout
}

// RunLog is Run that also returns Chromium's log (its standard error),
// where --enable-logging=stderr puts the page's console messages,
// Content-Security-Policy violations among them.
func RunLog(t testing.TB, bin, url string, extra ...string) (stdout []byte, log string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
		"--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=5000",
	}, extra...)
	args = append(args, url)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LANG=en_US.UTF-8")
	cmd.WaitDelay = 10 * time.Second
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(extra, " "), err, LastLines(stderr.String(), 20))
	}
	return out.Bytes(), stderr.String()
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Find returns the first element under n (n included) for which match
// holds.
func Find(n *html.Node, match func(*html.Node) bool) *html.Node {
	if n == nil {
		return nil
	}
	if n.Type == html.ElementNode && match(n) {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if m := Find(c, match); m != nil {
			return m
		}
	}
	return nil
}

// Attr returns n's attribute key, "" if absent.
func Attr(n *html.Node, key string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// ByID matches the element with id.
func ByID(id string) func(*html.Node) bool {
	return func(n *html.Node) bool { return n.Type == html.ElementNode && Attr(n, "id") == id }
}

// Text returns the text under n.
func Text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n == nil {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.TrimSpace(b.String())
}
