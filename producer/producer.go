// Package producer publishes events to Nudge's shard streams from Go.
//
// It validates each event against the contract, picks the shard from the
// event's routing key (the conversation for messages and reads, the user
// otherwise) so a conversation's events stay in order, and adds the JSON
// under the entry field "event". Producers in other languages do the same
// with XADD; see docs/events.md.
package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/keys"
)

// DefaultMaxLen is the default backstop length of each shard stream.
const DefaultMaxLen = 1_000_000

// Config configures a Producer.
type Config struct {
	// Keyspace must match the consumers'. Default keys.New("", 0).
	Keyspace keys.Keyspace
	// MaxLen caps each shard stream with XADD MAXLEN ~: a backstop so a
	// stream cannot grow without bound while no consumer runs. Consumers
	// trim what they have processed long before it. When a backlog passes
	// it, the oldest unprocessed events are lost, so size it for the
	// longest outage to survive (about 200 bytes per event). Default
	// 1,000,000; -1 disables it.
	MaxLen int64
}

// Producer publishes events. It is safe for concurrent use.
type Producer struct {
	rdb    redis.UniversalClient
	ks     keys.Keyspace
	maxLen int64
}

// New returns a Producer writing through rdb.
func New(rdb redis.UniversalClient, cfg Config) *Producer {
	ks := keys.New(cfg.Keyspace.Prefix, cfg.Keyspace.Shards)
	maxLen := cfg.MaxLen
	if maxLen == 0 {
		maxLen = DefaultMaxLen
	}
	return &Producer{rdb: rdb, ks: ks, maxLen: maxLen}
}

// ErrInvalid wraps the validation error of an event that was not published.
var ErrInvalid = errors.New("producer: invalid event")

// Publish validates e and adds it to its shard stream, returning the entry id.
func (p *Producer) Publish(ctx context.Context, e *event.Event) (string, error) {
	args, err := p.args(e)
	if err != nil {
		return "", err
	}
	id, err := p.rdb.XAdd(ctx, args).Result()
	if err != nil {
		return "", fmt.Errorf("publish %s: %w", e.ID, err)
	}
	return id, nil
}

// PublishBatch validates every event, then adds them all in one pipeline.
// Nothing is published if an event is invalid. Events of one conversation
// keep their order. It returns the entry ids in the order of events.
func (p *Producer) PublishBatch(ctx context.Context, events []*event.Event) ([]string, error) {
	all := make([]*redis.XAddArgs, len(events))
	for i, e := range events {
		a, err := p.args(e)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		all[i] = a
	}
	cmds := make([]*redis.StringCmd, len(all))
	_, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, a := range all {
			cmds[i] = pipe.XAdd(ctx, a)
		}
		return nil
	})
	ids := make([]string, len(cmds))
	for i, c := range cmds {
		ids[i] = c.Val()
	}
	if err != nil {
		return ids, fmt.Errorf("publish batch: %w", err)
	}
	return ids, nil
}

// PublishRaw adds a payload as is to the shard of routingKey, without
// validating it: for tools that test how consumers handle bad input.
func (p *Producer) PublishRaw(ctx context.Context, routingKey string, payload []byte) (string, error) {
	id, err := p.rdb.XAdd(ctx, p.xadd(p.ks.Shard(routingKey), payload)).Result()
	if err != nil {
		return "", fmt.Errorf("publish raw: %w", err)
	}
	return id, nil
}

func (p *Producer) args(e *event.Event) (*redis.XAddArgs, error) {
	if err := event.Validate(e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", e.ID, err)
	}
	if len(b) > event.MaxEventBytes {
		return nil, fmt.Errorf("%w: encoded event is %d bytes, limit %d", ErrInvalid, len(b), event.MaxEventBytes)
	}
	return p.xadd(p.ks.Shard(e.RoutingKey()), b), nil
}

func (p *Producer) xadd(shard int, payload []byte) *redis.XAddArgs {
	a := &redis.XAddArgs{Stream: p.ks.Stream(shard), Values: []any{"event", payload}}
	if p.maxLen > 0 {
		a.MaxLen, a.Approx = p.maxLen, true
	}
	return a
}

// Keyspace returns the keyspace the producer writes to.
func (p *Producer) Keyspace() keys.Keyspace { return p.ks }
