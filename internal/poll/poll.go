// Package poll waits, in tests, for what another goroutine or process
// makes true: a push delivered, a counter flushed, a queue drained.
package poll

import (
	"testing"
	"time"
)

// interval is how often Until and UntilState ask their condition: about
// 500 times over the timeout, every 10 to 100 ms, so that a long wait
// does not load the servers a test measures with its own questions.
func interval(timeout time.Duration) time.Duration {
	return min(max(timeout/500, 10*time.Millisecond), 100*time.Millisecond)
}

// Until calls cond until it returns true. Once timeout has passed, it
// fails the test, naming what it waited for.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	wait(t, timeout, what, func() (bool, string) { return cond(), "" })
}

// UntilState is Until for a condition that can say where things stand:
// the test's failure ends with the state cond gave last.
func UntilState(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	wait(t, timeout, what, cond)
}

func wait(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline, every := time.Now().Add(timeout), interval(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if state != "" {
				what += ": " + state
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(every)
	}
}
