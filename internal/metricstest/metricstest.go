// Package metricstest scrapes a running component's metrics server in
// tests: /metrics series values, /readyz and /healthz.
package metricstest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Get fetches http://addr+path and returns the status code and body; the
// code is 0 if the server does not answer.
func Get(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Sum returns the value of selector in an exposition: with labels
// (`name{a="x"}`, labels in the order Prometheus writes them, sorted) the
// one series that matches exactly, else the sum of every series of the
// name. Absent series are 0.
func Sum(exposition, selector string) float64 {
	var sum float64
	for line := range strings.SplitSeq(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		key, val := line[:i], line[i+1:]
		name, _, _ := strings.Cut(key, "{")
		if key != selector && (strings.Contains(selector, "{") || name != selector) {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// Value scrapes addr's /metrics and returns Sum of selector.
func Value(t testing.TB, addr, selector string) float64 {
	t.Helper()
	code, body := Get(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return Sum(body, selector)
}

// WaitFor polls addr's /metrics until selector equals want, for up to 30s.
func WaitFor(t testing.TB, addr, selector string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := Get(t, addr, "/metrics")
		got := Sum(body, selector)
		if code == http.StatusOK && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v (status %d)", selector, got, want, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
