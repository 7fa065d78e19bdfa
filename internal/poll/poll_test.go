package poll_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/poll"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	t.Parallel()
	calls := 0
	poll.Until(t, time.Second, "the third call", func() bool {
		calls++
		return calls == 3
	})
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
}

// recorder is a testing.TB whose Fatalf records the message and ends the
// goroutine, as the real one does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = strings.TrimSpace(fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func TestUntilFailsNamingWhatItWaitedFor(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { poll.Until(r, 50*time.Millisecond, "the moon", func() bool { return false }) })
	wg.Wait()
	if want := "timed out after 50ms waiting for the moon"; r.msg != want {
		t.Errorf("failure %q, want %q", r.msg, want)
	}
}

func TestUntilStateEndsTheFailureWithTheLastState(t *testing.T) {
	t.Parallel()
	r := &recorder{TB: t}
	calls := 0
	var wg sync.WaitGroup
	wg.Go(func() {
		poll.UntilState(r, 50*time.Millisecond, "the moon", func() (bool, string) {
			calls++
			return false, fmt.Sprintf("%d looks", calls)
		})
	})
	wg.Wait()
	if want := fmt.Sprintf("timed out after 50ms waiting for the moon: %d looks", calls); r.msg != want {
		t.Errorf("failure %q, want %q", r.msg, want)
	}
}
