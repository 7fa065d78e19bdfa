package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/streamid"
)

// errUnknownOutcome is returned when the streams cannot tell whether a
// failed attempt added an entry: publishing it again could add a copy the
// record would not hold, so the run stops instead.
var errUnknownOutcome = errors.New("cannot tell which entries a failed attempt added")

// settle waits until Redis answers again after the failed attempt of b
// (attemptErr), then finds out from the streams which of b's entries the
// attempt added (see resolve). It returns nil when b may be published
// again, or an error when the batch's deadline passed or the outcome
// cannot be known.
func (p *publisher) settle(ctx context.Context, b *batch, attemptErr error) error {
	wait := 25 * time.Millisecond
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up after PublishTimeout (%s): %w", p.r.cfg.PublishTimeout, attemptErr)
		case <-t.C:
		}
		err := p.resolve(ctx, b)
		if err == nil || errors.Is(err, errUnknownOutcome) {
			return err
		}
		// Still down. Poll often: the sooner the streams are read once
		// Redis is back, the less likely a consumer has trimmed what the
		// attempt added.
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// startFloors sets the last entry of each shard's stream as the run
// starts as where to look for the entries of a failed attempt, until the
// run confirms one of its own there. Without it (Redis did not answer), a
// stream is looked at from its start.
func (p *publisher) startFloors(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.r.cfg.PublishTimeout)
	defer cancel()
	ks := p.r.prod.Keyspace()
	cmds := make([]*redis.XInfoStreamCmd, ks.Shards)
	_, _ = p.r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for s := range cmds {
			cmds[s] = pipe.XInfoStream(ctx, ks.Stream(s))
		}
		return nil
	})
	for s, c := range cmds {
		if info, err := c.Result(); err == nil && p.last[s] == "" {
			p.last[s] = info.LastGeneratedID
		}
	}
}

// resolve confirms the entries of b that a failed attempt added although
// their replies were lost. Redis runs one connection's commands in order,
// so what the attempt added to a stream is the first of the entries it
// sent there, right after the last entry the run knows it added: those
// entries are read back and matched, in order, with the unconfirmed items
// of the stream (the valid events in one pipeline, then the bad entries).
//
// What cannot be resolved returns errUnknownOutcome: entries after the
// last known one may have been trimmed before they could be read (a
// consumer applied and trimmed them first; or, with other producers
// writing to the streams, the head moved past the last known entry), or
// the stream holds a copy of an item out of order (the client re-sent a
// pipeline by itself: give the Runner a client with MaxRetries -1).
func (p *publisher) resolve(ctx context.Context, b *batch) error {
	byShard := map[int][]int{}
	var shards []int
	add := func(i int) {
		s := p.shard(&b.items[i])
		if _, ok := byShard[s]; !ok {
			shards = append(shards, s)
		}
		byShard[s] = append(byShard[s], i)
	}
	for _, i := range b.idx {
		if b.ids[i] == "" {
			add(i)
		}
	}
	for i := range b.items {
		if b.ids[i] == "" && b.items[i].Kind == KindBad {
			add(i)
		}
	}
	payloads := make(map[int]string, len(b.items))
	ours := make(map[string]bool, len(b.items))
	for i := range b.items {
		it := &b.items[i]
		v := string(it.Raw)
		if it.Kind != KindBad {
			// As the producer encodes it.
			raw, err := json.Marshal(it.Event)
			if err != nil {
				return fmt.Errorf("encode %s: %w", it.Event.ID, err)
			}
			v = string(raw)
		}
		payloads[i], ours[v] = v, true
	}
	for _, s := range shards {
		n, err := p.resolveShard(ctx, b, s, byShard[s], payloads, ours)
		if n > 0 {
			p.r.mu.Lock()
			p.r.stats.Recovered += int64(n)
			p.r.mu.Unlock()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// resolveShard matches the entries of the shard's stream after the last
// known one with want, the unconfirmed items sent there in order, and
// returns how many it confirmed.
func (p *publisher) resolveShard(ctx context.Context, b *batch, shard int, want []int,
	payloads map[int]string, ours map[string]bool) (int, error) {
	const page = 1000
	stream := p.r.prod.Keyspace().Stream(shard)
	last := p.last[shard] // "0-0" for a stream empty since it was created
	known := last != ""
	from := "-"
	if known {
		from = "(" + last
	}
	next := 0
	for {
		msgs, err := p.r.rdb.XRangeN(ctx, stream, from, "+", page).Result()
		if err != nil {
			return next, fmt.Errorf("read %s: %w", stream, err)
		}
		for _, m := range msgs {
			v, _ := m.Values["event"].(string)
			switch {
			case next < len(want) && v == payloads[want[next]]:
				p.confirm(b, want[next], m.ID)
				next++
			case ours[v]:
				// Not the first the attempt sent: the ones before it were
				// trimmed already, or the client re-sent the pipeline.
				return next, fmt.Errorf("%w: %s holds entry %s, a copy of this batch's out of order (trimmed before it, or a client that re-sends pipelines itself?)",
					errUnknownOutcome, stream, m.ID)
			}
		}
		if len(msgs) < page {
			break
		}
		from = "(" + msgs[len(msgs)-1].ID
	}
	// Whether entries after last could have gone before they were read,
	// from the stream's state read after them. Consumers trim a stream
	// from its head (XTRIM, which leaves max-deleted-entry-id alone); XDEL
	// deletes anywhere (and moves max-deleted-entry-id).
	info, err := p.r.rdb.XInfoStream(ctx, stream).Result()
	if err != nil {
		var rerr redis.Error
		if errors.As(err, &rerr) && strings.Contains(rerr.Error(), "no such key") {
			if !known {
				return next, nil // never created: the attempt added nothing here
			}
			return next, fmt.Errorf("%w: %s was deleted", errUnknownOutcome, stream)
		}
		return next, fmt.Errorf("inspect %s: %w", stream, err)
	}
	floor := last
	if !known {
		floor = "0-0"
	}
	switch {
	case info.MaxDeletedEntryID != "" && streamid.Less(floor, info.MaxDeletedEntryID):
		return next, fmt.Errorf("%w: entries of %s after %s were deleted (up to %s)",
			errUnknownOutcome, stream, floor, info.MaxDeletedEntryID)
	case next > 0:
		// The first entry the attempt added is there, so the later ones
		// are too: trimming takes the head of a stream.
	case !streamid.Less(floor, info.LastGeneratedID):
		// Nothing was added after last.
	case info.Length > 0 && !streamid.Less(floor, info.RecordedFirstEntryID):
		// The head is still at or before last: nothing after it was trimmed.
	default:
		// Entries were added after last and the head moved past it: ours,
		// applied and trimmed by a consumer already, or another producer's.
		return next, fmt.Errorf("%w: %s was trimmed past %s (the last entry known to be this run's) before it could be read",
			errUnknownOutcome, stream, floor)
	}
	return next, nil
}

// refused reports whether err is Redis refusing a write it did not make:
// memory full (OOM, under noeviction), still loading its data, a replica,
// or a cluster slot moving. Such a write is retried as it is: there is no
// outcome to resolve.
func refused(err error) bool { return datastore.Refused(err) }

// wait sleeps before a refused write is tried again, or gives up at
// PublishTimeout.
func (p *publisher) wait(ctx context.Context, refusedErr error) error {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("gave up after PublishTimeout (%s): %w", p.r.cfg.PublishTimeout, refusedErr)
	case <-t.C:
		return nil
	}
}
