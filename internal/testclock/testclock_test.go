package testclock_test

import (
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/testclock"
)

func TestTheClockMovesOnlyWhenMoved(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 29, 1, 59, 0, 0, time.UTC)
	c := testclock.New(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("Now = %v, want %v", got, start)
	}
	c.Add(90 * time.Second)
	if got, want := c.Now(), start.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("after Add: %v, want %v", got, want)
	}
	c.Set(start)
	if got := c.Now(); !got.Equal(start) {
		t.Errorf("after Set: %v, want %v", got, start)
	}
}
