package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/streamid"
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

// batch is a batch of items on its way to Redis.
type batch struct {
	items        []Item
	evs          []*event.Event // the valid events of items, in order
	pendingReads int            // the generator's, once items were drawn
	idx          []int          // the index in items of each of evs
	ids          []string       // entry id of each item once Redis confirmed it, else ""
}

// publisher publishes batches in order, in a goroutine of its own, and
// accounts for them in the Runner's stats and record.
type publisher struct {
	r      *Runner
	queue  chan *batch
	free   chan *batch
	failed chan struct{} // closed when err is set
	done   chan struct{} // closed when the goroutine returns
	err    error         // the first error; read after done

	rec     *bufio.Writer // nil without Record
	enc     *json.Encoder
	ids     *bufio.Writer // nil without RecordIDs
	flushed time.Time

	// last is, by shard, the id of the last entry this run knows it added
	// to the shard's stream ("" for none yet): where to look for the
	// entries of a failed attempt.
	last []string
}

func startPublisher(ctx context.Context, r *Runner) *publisher {
	p := &publisher{
		r:      r,
		queue:  make(chan *batch, 1),
		free:   make(chan *batch, 3),
		failed: make(chan struct{}),
		done:   make(chan struct{}),
		last:   make([]string, r.prod.Keyspace().Shards),
	}
	if r.cfg.Record != nil {
		p.rec = bufio.NewWriterSize(r.cfg.Record, 256<<10)
		p.enc = json.NewEncoder(p.rec)
	}
	if r.cfg.RecordIDs != nil {
		p.ids = bufio.NewWriterSize(r.cfg.RecordIDs, 64<<10)
	}
	p.flushed = time.Now()
	// Not cancelled with Run's context: drawn batches are finished.
	go p.loop(context.WithoutCancel(ctx))
	return p
}

// batch returns an empty batch to fill.
func (p *publisher) batch() *batch {
	select {
	case b := <-p.free:
		return b
	default:
		n := p.r.cfg.BatchSize
		return &batch{items: make([]Item, 0, n), evs: make([]*event.Event, 0, n), idx: make([]int, 0, n), ids: make([]string, 0, n)}
	}
}

// send queues b for publishing; false if the publisher failed.
func (p *publisher) send(b *batch) bool {
	select {
	case p.queue <- b:
		return true
	case <-p.failed:
		return false
	}
}

// close publishes the batches queued, flushes the record and returns the
// first error.
func (p *publisher) close() error {
	close(p.queue)
	<-p.done
	return p.err
}

func (p *publisher) loop(ctx context.Context) {
	defer close(p.done)
	p.startFloors(ctx)
	for b := range p.queue {
		if p.err == nil {
			if err := p.publish(ctx, b); err != nil {
				p.err = err
				close(p.failed)
			}
		}
		clear(b.items) // drop references for the collector
		clear(b.evs)
		b.items, b.evs, b.idx = b.items[:0], b.evs[:0], b.idx[:0]
		p.free <- b
	}
	if err := p.flush(); p.err == nil {
		p.err = err
	}
}

// publish publishes a batch: the valid events in one pipelined
// PublishBatch, then the bad entries raw. An attempt that fails (Redis down
// or restarting, a connection reset) is retried with backoff until
// PublishTimeout: first the streams are read to find out which entries the
// failed attempt added although their replies were lost, then the others
// are published again, with the same event ids. So a restart of Redis
// loses no event and adds no copy the record does not hold. An invalid
// event is not retried.
func (p *publisher) publish(ctx context.Context, b *batch) error {
	ctx, cancel := context.WithTimeout(ctx, p.r.cfg.PublishTimeout)
	defer cancel()
	b.ids = slices.Grow(b.ids[:0], len(b.items))[:len(b.items)]
	clear(b.ids)
	var err error
	for {
		if err = p.attempt(ctx, b); err == nil || errors.Is(err, producer.ErrInvalid) {
			break
		}
		p.r.mu.Lock()
		p.r.stats.Retries++
		p.r.mu.Unlock()
		if refused(err) {
			// Redis answered and did not write: nothing to resolve.
			if err = p.wait(ctx, err); err != nil {
				break
			}
			continue
		}
		if err = p.settle(ctx, b, err); err != nil {
			break
		}
	}
	if aerr := p.account(b); err == nil {
		err = aerr
	}
	if err != nil {
		return fmt.Errorf("publish %d entries: %w", len(b.items), err)
	}
	return nil
}

// attempt publishes the items of b Redis has not confirmed yet and sets
// the ids of those it confirms.
func (p *publisher) attempt(ctx context.Context, b *batch) error {
	evs, idx := b.evs, b.idx
	if slices.ContainsFunc(b.ids, func(id string) bool { return id != "" }) { // a retry
		evs, idx = nil, nil
		for _, i := range b.idx {
			if b.ids[i] == "" {
				evs, idx = append(evs, b.items[i].Event), append(idx, i)
			}
		}
	}
	if len(evs) > 0 {
		ids, err := p.r.prod.PublishBatch(ctx, evs)
		for j, id := range ids {
			if id != "" {
				p.confirm(b, idx[j], id)
			}
		}
		if err != nil {
			return err
		}
	}
	for i := range b.items {
		it := &b.items[i]
		if it.Kind != KindBad || b.ids[i] != "" {
			continue
		}
		id, err := p.r.prod.PublishRaw(ctx, it.RoutingKey, it.Raw)
		if err != nil {
			return err
		}
		p.confirm(b, i, id)
	}
	return nil
}

// confirm records that item i of b is entry id of its stream.
func (p *publisher) confirm(b *batch, i int, id string) {
	b.ids[i] = id
	s := p.shard(&b.items[i])
	if p.last[s] == "" || streamid.Less(p.last[s], id) {
		p.last[s] = id
	}
}

// shard returns the shard of an item.
func (p *publisher) shard(it *Item) int {
	if it.Kind == KindBad {
		return p.r.prod.Keyspace().Shard(it.RoutingKey)
	}
	return p.r.prod.Keyspace().Shard(it.Event.RoutingKey())
}

// account adds to the stats and the record the items of b Redis confirmed.
// After an error, whether the others were added is unknown.
func (p *publisher) account(b *batch) error {
	r := p.r
	var err error
	r.mu.Lock()
	for i := range b.items {
		if b.ids[i] == "" {
			continue
		}
		it := &b.items[i]
		r.stats.add(it)
		if it.Kind != KindBad && p.enc != nil && err == nil {
			if err = p.enc.Encode(it.Event); err != nil {
				err = fmt.Errorf("record: %w", err)
			}
		}
		if it.Kind != KindBad && p.ids != nil && err == nil {
			if _, err = p.ids.WriteString(b.ids[i] + "\n"); err != nil {
				err = fmt.Errorf("record ids: %w", err)
			}
		}
	}
	r.stats.PendingReads = b.pendingReads
	r.mu.Unlock()
	if err == nil && (p.rec != nil || p.ids != nil) && time.Since(p.flushed) >= time.Second {
		err = p.flush()
	}
	return err
}

func (p *publisher) flush() error {
	p.flushed = time.Now()
	if p.rec != nil {
		if err := p.rec.Flush(); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	if p.ids != nil {
		if err := p.ids.Flush(); err != nil {
			return fmt.Errorf("record ids: %w", err)
		}
	}
	return nil
}

// pacerTick is how often a paced run publishes at most: it waits for the
// entries of this long to be due (or a full batch), never for one entry.
const pacerTick = 5 * time.Millisecond

// pacer releases entries at a steady rate, measured from start: after t
// seconds, rate × t entries are due. It sleeps once per batch, not per
// entry, so it stays accurate at any rate a batch can carry.
type pacer struct {
	rate  float64
	start time.Time // moved forward when the run falls more than a second behind
	sent  int64     // entries released since start
	min   int       // entries worth waking up for
	timer *time.Timer
}

// wait blocks until at least p.min entries (or limit, if fewer) are due
// and returns how many are, at most limit; 0 if ctx ends first.
func (p *pacer) wait(ctx context.Context, limit int) int {
	want := int64(min(p.min, limit))
	for {
		now := time.Now()
		due := int64(now.Sub(p.start).Seconds()*p.rate) - p.sent
		if behind := max(int64(p.rate), int64(limit)); due > behind {
			// More than a second behind (Redis was slow): forget the debt
			// rather than burst to pay it back.
			p.start = now.Add(-p.offset(p.sent + int64(limit)))
			due = int64(limit)
		}
		if due >= want {
			n := min(due, int64(limit))
			p.sent += n
			return int(n)
		}
		d := p.start.Add(p.offset(p.sent + want)).Sub(now)
		if p.timer == nil {
			p.timer = time.NewTimer(d)
		} else {
			p.timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			return 0
		case <-p.timer.C:
		}
	}
}

// offset returns when the n-th entry is due, after start.
func (p *pacer) offset(n int64) time.Duration {
	return time.Duration(float64(n) / p.rate * float64(time.Second))
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
