package loadgen

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/producer"
)

// Stats are the totals of what a Runner published.
type Stats struct {
	// Events counts the stream entries published: every valid event,
	// duplicate and bad entry, the setup included.
	Events int64 `json:"events"`
	// Setup counts the events of the setup (device registrations and
	// preferences published before the traffic).
	Setup int64 `json:"setup"`
	// ByType counts the valid events by type, setup included, duplicates
	// not included.
	ByType map[string]int64 `json:"by_type"`
	// Messages, Recipients and Mentions count the message.sent events and
	// their recipients and mentions, duplicates not included.
	Messages   int64 `json:"messages"`
	Recipients int64 `json:"recipients"`
	Mentions   int64 `json:"mentions"`
	// Reads counts the conversation.read events, duplicates not included.
	Reads int64 `json:"reads"`
	// Opens counts the notification.opened events (reactions to pushes,
	// PushFeed), duplicates not included.
	Opens int64 `json:"opens"`
	// Duplicates counts the events published a second time with the same
	// id.
	Duplicates int64 `json:"duplicates"`
	// Retries counts the publish attempts that failed (Redis down or
	// restarting, a connection reset); each was retried until
	// PublishTimeout.
	Retries int64 `json:"retries"`
	// Recovered counts the entries a failed attempt had added although
	// their replies were lost, found in the streams before the retry: they
	// were not published again.
	Recovered int64 `json:"recovered"`
	// Bad counts the malformed entries, and BadByReason counts them by the
	// dead-letter reason a consumer should give them.
	Bad         int64            `json:"bad"`
	BadByReason map[string]int64 `json:"bad_by_reason"`
	// PendingReads is the number of reads drawn whose delay had not passed.
	PendingReads int `json:"pending_reads"`
	// Elapsed is the time since Run started, or the length of the run
	// once it returned.
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Rate returns the entries published per second over the run.
func (s Stats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Events) / s.Elapsed.Seconds()
}

func (s *Stats) add(it *Item) {
	s.Events++
	switch it.Kind {
	case KindBad:
		s.Bad++
		s.BadByReason[string(it.Reason)]++
		return
	case KindDuplicate:
		s.Duplicates++
		return
	case KindSetup:
		s.Setup++
	}
	e := it.Event
	s.ByType[e.Type]++
	switch e.Type {
	case event.TypeMessage:
		s.Messages++
		s.Recipients += int64(len(e.Recipients))
		s.Mentions += int64(len(e.Mentions))
	case event.TypeRead:
		s.Reads++
	case event.TypeOpened:
		s.Opens++
	}
}

func (s Stats) clone() Stats {
	s.ByType = maps.Clone(s.ByType)
	s.BadByReason = maps.Clone(s.BadByReason)
	return s
}

// Runner publishes a Generator's events to Redis.
type Runner struct {
	cfg     Config
	gen     *Generator
	rdb     redis.UniversalClient
	prod    *producer.Producer
	started atomic.Bool

	mu    sync.Mutex
	stats Stats     // guarded by mu
	begin time.Time // guarded by mu: when Run started
	ended bool      // guarded by mu: Run returned; stats.Elapsed is final
}

// New validates cfg, draws the population and returns a Runner publishing
// through rdb.
//
// For a record that is exact across connection failures, give it a client
// with MaxRetries -1: go-redis otherwise re-sends a pipeline whose replies
// were lost, which may add copies the Runner cannot see when the re-sent
// pipeline succeeds. The Runner retries by itself (see PublishTimeout).
func New(rdb redis.UniversalClient, cfg Config) (*Runner, error) {
	gen, err := NewGenerator(cfg)
	if err != nil {
		return nil, err
	}
	cfg = gen.cfg // with defaults
	return &Runner{
		cfg:   cfg,
		gen:   gen,
		rdb:   rdb,
		prod:  producer.New(rdb, producer.Config{Keyspace: cfg.Keyspace, MaxLen: cfg.MaxLen}),
		stats: Stats{ByType: map[string]int64{}, BadByReason: map[string]int64{}},
	}, nil
}

// Config returns the Runner's configuration with defaults filled in.
func (r *Runner) Config() Config { return r.cfg }

// Stats returns the totals so far. It is safe to call at any time, from
// any goroutine.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats.clone()
	if !r.ended && !r.begin.IsZero() {
		s.Elapsed = time.Since(r.begin)
	}
	return s
}

// Run publishes the setup, then the traffic, until Total entries,
// Duration or the end of ctx, whichever comes first, and returns the
// totals. Batches already drawn when ctx ends are published; the end of
// ctx is not an error. A Runner runs once.
//
// Drawing and publishing overlap: one goroutine draws the next batch while
// another publishes the previous one. Batches are published one at a time,
// in order, so each conversation's events reach its stream in order.
func (r *Runner) Run(ctx context.Context) (Stats, error) {
	if !r.started.CompareAndSwap(false, true) {
		return r.Stats(), ErrRunning
	}
	begin := time.Now()
	r.mu.Lock()
	r.begin = begin
	r.mu.Unlock()

	if r.cfg.Progress != nil {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(r.cfg.ProgressInterval)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					r.cfg.Progress(r.Stats())
				}
			}
		})
		defer func() {
			close(stop)
			wg.Wait()
		}()
	}

	if r.cfg.PushFeed != "" {
		fctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { r.followPushes(fctx) })
		defer func() {
			stop()
			wg.Wait()
		}()
	}
	p := startPublisher(ctx, r)
	if now := r.draw(ctx, p, begin); now != nil && r.cfg.Tail > 0 {
		r.tail(ctx, p, now)
	}
	err := p.close()

	r.mu.Lock()
	r.stats.Elapsed = time.Since(begin)
	r.ended = true
	st := r.stats.clone()
	r.mu.Unlock()
	return st, err
}

// draw draws the setup and then the traffic in batches and hands them to
// p, pacing them at the configured rate. It returns when the traffic ends,
// with the traffic's clock, or when p fails or ctx ends, with nil.
func (r *Runner) draw(ctx context.Context, p *publisher, begin time.Time) (clock func() time.Time) {
	cfg := &r.cfg
	base := cfg.Start
	if base.IsZero() {
		base = begin
	}
	for r.gen.SetupRemaining() > 0 && ctx.Err() == nil {
		n := min(cfg.BatchSize, r.gen.SetupRemaining())
		if !p.send(r.fill(p.batch(), n, func(int) time.Time { return base })) {
			return nil
		}
	}

	trafficStart := time.Now()
	now := func() time.Time { return base.Add(time.Since(trafficStart)) }
	var sent int64 // traffic entries drawn
	pace := pacer{rate: cfg.Rate, start: trafficStart, min: max(1, min(cfg.BatchSize, int(cfg.Rate*pacerTick.Seconds())))}
	defer pace.stop()
	for ctx.Err() == nil {
		limit := int64(cfg.BatchSize)
		if cfg.Total > 0 {
			limit = min(limit, cfg.Total-sent)
		}
		if cfg.Rate > 0 && cfg.Duration > 0 {
			// Stop at the schedule's end: exactly Rate × Duration entries.
			limit = min(limit, int64(cfg.Rate*cfg.Duration.Seconds())-sent)
		}
		if limit <= 0 || cfg.Duration > 0 && time.Since(trafficStart) >= cfg.Duration {
			return now
		}

		var clock func(i int) time.Time
		n := int(limit)
		if cfg.Rate > 0 {
			if n = pace.wait(ctx, n); n == 0 {
				return nil
			}
			// The entries' scheduled times, from Start: the same for
			// every run that keeps up with its rate.
			from, first := base.Add(pace.start.Sub(trafficStart)), sent
			clock = func(i int) time.Time {
				return from.Add(time.Duration(float64(first+int64(i)) / cfg.Rate * float64(time.Second)))
			}
		} else {
			at := now()
			clock = func(int) time.Time { return at }
		}
		if !p.send(r.fill(p.batch(), n, clock)) {
			return nil
		}
		sent += int64(n)
	}
	return nil
}

// tailTick is how often the tail looks for what fell due.
const tailTick = 50 * time.Millisecond

// tail publishes, for Config.Tail, what falls due on the traffic's clock
// now: no new event (Generator.NextDue).
func (r *Runner) tail(ctx context.Context, p *publisher, now func() time.Time) {
	end := time.Now().Add(r.cfg.Tail)
	t := time.NewTicker(tailTick)
	defer t.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := now()
		for it, ok := r.gen.NextDue(at); ok; {
			b := p.batch()
			for ok && len(b.items) < r.cfg.BatchSize {
				b.items = append(b.items, it)
				if it.Kind != KindBad {
					b.evs, b.idx = append(b.evs, it.Event), append(b.idx, len(b.items)-1)
				}
				it, ok = r.gen.NextDue(at)
			}
			b.pendingReads = r.gen.PendingReads()
			if !p.send(b) {
				return
			}
		}
	}
}

// fill draws n items into b at the times clock gives.
func (r *Runner) fill(b *batch, n int, clock func(i int) time.Time) *batch {
	for i := range n {
		it := r.gen.Next(clock(i))
		b.items = append(b.items, it)
		if it.Kind != KindBad {
			b.evs, b.idx = append(b.evs, it.Event), append(b.idx, len(b.items)-1)
		}
	}
	b.pendingReads = r.gen.PendingReads()
	return b
}

// pacerTick is how often a paced run publishes at most: it waits for the
// entries of this long to be due (or a full batch), never for one entry.
const pacerTick = 5 * time.Millisecond
