// Package testclock is a clock a test sets and moves, for the Now
// settings of the packages' configs (flush.Config.Now,
// report.ServerConfig.Now, ...).
package testclock

import (
	"sync"
	"time"
)

// Clock is a time that only moves when the test moves it. It is safe for
// concurrent use: the code under test reads it while the test sets it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Clock set to t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time: a Config's Now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
