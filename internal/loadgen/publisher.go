package loadgen

// The publisher: pipelined batches to the shard streams, retried through
// outages without publishing an entry twice, paced to the rate.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/streamid"
	"github.com/nudgehq/nudge/producer"
)

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
