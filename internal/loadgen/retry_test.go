package loadgen_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/loadgen"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// Modes of a flaky proxy.
const (
	forward     int32 = iota // pass everything
	refuse                   // close new connections at once: Redis is down
	dropReplies              // pass the commands, drop the replies: Redis ran them but the client never hears
)

// flaky is a TCP proxy to the test Redis that can refuse connections,
// drop replies and cut the connections it carries.
type flaky struct {
	ln   net.Listener
	mode atomic.Int32
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func newFlaky(t *testing.T) *flaky {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{ln: ln, conns: map[net.Conn]bool{}}
	f.wg.Go(f.accept)
	t.Cleanup(func() {
		ln.Close()
		f.cut()
		f.wg.Wait()
	})
	return f
}

func (f *flaky) addr() string { return f.ln.Addr().String() }

func (f *flaky) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if f.mode.Load() == refuse {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", redistest.Addr())
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns[c], f.conns[s] = true, true
		f.mu.Unlock()
		f.wg.Go(func() { _, _ = io.Copy(s, c); s.Close(); c.Close() })
		f.wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && f.mode.Load() != dropReplies {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			s.Close()
		})
	}
}

// cut closes every connection the proxy carries.
func (f *flaky) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// outage plays Redis going away after delay: for lost, the commands still
// reach Redis but the replies do not; then the connections are cut and
// refused for down; then Redis is back.
func (f *flaky) outage(delay, lost, down time.Duration) {
	time.Sleep(delay)
	if lost > 0 {
		f.mode.Store(dropReplies)
		time.Sleep(lost)
	}
	f.mode.Store(refuse)
	f.cut()
	time.Sleep(down)
	f.mode.Store(forward)
}

// A run through Redis outages, some of them after Redis ran commands whose
// replies were lost, publishes every event and adds no copy its record
// does not hold: the streams hold exactly what the record and the stats
// say.
func TestRunRetriesThroughOutages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFlaky(t)
	rdb := redis.NewClient(&redis.Options{Addr: f.addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })

	var record bytes.Buffer
	cfg := small()
	cfg.Keyspace, cfg.Record = b.ks, &record
	cfg.Rate, cfg.Total = 2_000, 5_000
	r, err := loadgen.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.outage(500*time.Millisecond, 50*time.Millisecond, 300*time.Millisecond)
		f.outage(400*time.Millisecond, 0, 500*time.Millisecond)
		f.outage(400*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond)
	}()
	st, err := r.Run(context.Background())
	<-done
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("%d entries, %d retries, %d recovered", st.Events, st.Retries, st.Recovered)
	if st.Retries < 3 || st.Recovered == 0 {
		t.Errorf("%d retries and %d entries recovered: want at least 3 retries and some recovered entries", st.Retries, st.Recovered)
	}
	if st.Events-st.Setup != cfg.Total {
		t.Errorf("%d events after the setup, want %d", st.Events-st.Setup, cfg.Total)
	}

	// The streams hold every recorded line once per recording, and the bad
	// entries the stats count: nothing lost, no copy unaccounted for.
	recorded := map[string]int{}
	for line := range bytes.Lines(record.Bytes()) {
		recorded[string(bytes.TrimSuffix(line, []byte("\n")))]++
	}
	ents := b.entries(t)
	if int64(len(ents)) != st.Events {
		t.Errorf("streams hold %d entries, stats say %d", len(ents), st.Events)
	}
	bad := map[string]int64{}
	for _, en := range ents {
		if _, err := event.Decode(en.payload); err != nil {
			bad[string(event.ReasonOf(err))]++
			continue
		}
		if recorded[string(en.payload)] == 0 {
			t.Fatalf("in the streams more often than recorded: %s", en.payload)
		}
		recorded[string(en.payload)]--
	}
	for line, n := range recorded {
		if n != 0 {
			t.Fatalf("recorded %d more times than in the streams: %s", n, line)
		}
	}
	for reason, n := range st.BadByReason {
		if bad[reason] != n {
			t.Errorf("%s: %d entries in the streams, stats %d", reason, bad[reason], n)
		}
	}
}

// A batch Redis never takes fails the run after PublishTimeout, with what
// was published before it accounted for.
func TestRunGivesUpAfterPublishTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFlaky(t)
	rdb := redis.NewClient(&redis.Options{Addr: f.addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	var record bytes.Buffer
	cfg := small()
	cfg.Keyspace, cfg.Record = b.ks, &record
	cfg.Rate, cfg.PublishTimeout = 2_000, 700*time.Millisecond
	r, err := loadgen.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.mode.Store(refuse)
		f.cut()
	}()
	start := time.Now()
	st, err := r.Run(context.Background())
	if err == nil || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("Run: %v after %v, want a publish error once PublishTimeout passed", err, time.Since(start))
	}
	t.Logf("Run: %v (%d retries)", err, st.Retries)
	if n := int64(bytes.Count(record.Bytes(), []byte("\n"))); n != st.Events-st.Bad || n == 0 {
		t.Errorf("record has %d lines, stats %d valid entries", n, st.Events-st.Bad)
	}
	if st.Retries == 0 {
		t.Error("no retry before giving up")
	}
}

// When a consumer applied and trimmed what a failed attempt had added
// before the Runner could read it back, the Runner cannot tell what was
// published: it fails rather than publish copies its record would not
// hold.
func TestRunFailsWhenTheOutcomeIsLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f := newFlaky(t)
	rdb := redis.NewClient(&redis.Options{Addr: f.addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	cfg := small()
	cfg.Keyspace, cfg.Rate, cfg.Total = b.ks, 2_000, 20_000
	r, err := loadgen.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.mode.Store(dropReplies)
		time.Sleep(50 * time.Millisecond)
		f.mode.Store(refuse)
		f.cut()
		for s := range b.ks.Shards { // a consumer applies everything and trims
			b.rdb.XTrimMaxLen(context.Background(), b.ks.Stream(s), 0)
		}
		f.mode.Store(forward)
	}()
	st, err := r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot tell which entries") {
		t.Fatalf("Run: %v, want it to fail: the outcome of the attempt is lost", err)
	}
	t.Logf("Run: %v (%d entries, %d retries)", err, st.Events, st.Retries)
}

// Redis refuses writes for a while (memory full, noeviction) while a
// consumer trims what it applied: the OOM replies are retried as writes
// that certainly did not happen (they are not resolved against the
// streams), and the run ends with every event published.
func TestRunRetriesRefusedWrites(t *testing.T) {
	t.Parallel()
	admin, _ := redistest.Private(t)
	rdb := redis.NewClient(&redis.Options{Addr: admin.Options().Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	b := bundle{rdb: rdb, ks: keys.New(redistest.RandomPrefix(), 4)}
	cfg := small()
	cfg.Keyspace = b.ks
	cfg.Rate, cfg.Total = 2_000, 4_000
	r, err := loadgen.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(500 * time.Millisecond)
		_ = admin.ConfigSet(ctx, "maxmemory", "1").Err()
		for range 10 { // a consumer trimming what it applied (XTRIM frees memory: Redis takes it)
			for s := range b.ks.Shards {
				_ = admin.XTrimMaxLen(ctx, b.ks.Stream(s), 0).Err()
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = admin.ConfigSet(ctx, "maxmemory", "0").Err()
	}()
	st, err := r.Run(ctx)
	<-done
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("%d entries, %d retries, %d recovered", st.Events, st.Retries, st.Recovered)
	if st.Retries == 0 {
		t.Error("no retry: Redis never refused a write")
	}
	if st.Events-st.Setup != cfg.Total {
		t.Errorf("%d events after the setup, want %d", st.Events-st.Setup, cfg.Total)
	}
}
