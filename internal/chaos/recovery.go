package chaos

// Recovery after a Redis restart: when every binary is ready and working
// again, from its /readyz and its metrics.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// recovery follows the binaries after Redis came back: each must be ready
// again and show work done since (ingest applying, the flusher flushing,
// the worker pushing).
type recovery struct {
	back    time.Time
	applied map[string]float64 // ingest events applied when Redis came back, by process
	pushes  int                // deliveries when Redis came back
	done    map[string]time.Duration
}

func newRecovery(ctx context.Context, back time.Time, addrs map[string]string, pushes int) *recovery {
	r := &recovery{back: back, applied: map[string]float64{}, pushes: pushes, done: map[string]time.Duration{}}
	for n, a := range addrs {
		if strings.HasPrefix(n, "ingest") {
			r.applied[n], _ = scrape(ctx, a, "nudge_ingest_events_applied_total")
		}
	}
	return r
}

// poll checks the binaries not recovered yet and reports whether all are.
func (r *recovery) poll(ctx context.Context, addrs map[string]string, pushes int) bool {
	for n, a := range addrs {
		if _, ok := r.done[n]; ok || !ready(ctx, a) {
			continue
		}
		var working bool
		switch {
		case strings.HasPrefix(n, "ingest"):
			v, err := scrape(ctx, a, "nudge_ingest_events_applied_total")
			working = err == nil && v > r.applied[n]
		case n == "flusher":
			v, err := scrape(ctx, a, "nudge_flush_last_success_timestamp_seconds")
			working = err == nil && v > float64(r.back.UnixNano())/1e9
		case n == "worker":
			working = pushes > r.pushes
		}
		if working {
			r.done[n] = time.Since(r.back)
		}
	}
	return len(r.done) == len(addrs)
}

func (r *recovery) slowest() (time.Duration, string) {
	var d time.Duration
	var who string
	for n, t := range r.done {
		if t > d {
			d, who = t, n
		}
	}
	return d, who
}

func (r *recovery) missing(names []string) []string {
	var out []string
	for _, n := range names {
		if _, ok := r.done[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// ready reports whether a process's /readyz answers 200.
func ready(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// scrape returns the sum of a metric's samples on a process's /metrics.
func scrape(ctx context.Context, addr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s: no %s", addr, name)
	}
	return sum, nil
}
