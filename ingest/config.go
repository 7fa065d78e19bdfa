// Package ingest reads events from the shard streams through one Redis
// consumer group and turns them into unread state and counters, applying
// every event exactly once.
//
// Each shard stream is owned by one consumer at a time through a lease, so
// the events of a conversation are applied in order; live consumers share
// the shards evenly and take over the shards of a consumer that stops
// renewing its leases. A batch is decoded in Go and applied by one Lua
// script that acknowledges each entry and applies it only if that
// acknowledgement removed it from the pending list (apply.lua). Entries that
// cannot be applied go to the shard's dead-letter stream with a reason.
package ingest

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/keys"
)

// DefaultGroup is the consumer group of ingest when Config.Group is empty.
const DefaultGroup = "nudge-ingest"

// DefaultConversionWindow is Config.ConversionWindow's default.
const DefaultConversionWindow = time.Hour

// Config configures a Consumer. The zero value of each field means its
// default.
type Config struct {
	// Keyspace names the keys and holds the number of shards. Default
	// keys.New("", 0): prefix "nudge", 8 shards.
	Keyspace keys.Keyspace
	// Group is the consumer group. Default "nudge-ingest".
	Group string
	// Consumer is this consumer's stable name within the group (the pod
	// name in Kubernetes). Default: the host name.
	Consumer string
	// BatchSize is the most entries read at once (XREADGROUP COUNT). Default 256.
	BatchSize int
	// Block is how long one read waits for new entries. Default 1s; it
	// bounds how fast a shard loop notices shutdown.
	Block time.Duration
	// ClaimIdle is how long a silent consumer keeps its shards and pending
	// entries: the lease TTL, and the idle time after which pending entries
	// are claimed (XAUTOCLAIM) by the shard's new owner. Default 30s.
	ClaimIdle time.Duration
	// MaxDeliveries is how many times an entry may be delivered before it
	// goes to the dead-letter stream (reason max_deliveries). Default 5.
	MaxDeliveries int
	// DedupeWindow is how long a producer event id is remembered: an event
	// re-published with the same id within it is applied once. Default 10m.
	DedupeWindow time.Duration
	// UnreadTTL is how long unread state lives without new messages.
	// Default 30 days.
	UnreadTTL time.Duration
	// PresenceTTL is how long a device counts as online after its last
	// online or heartbeat event. Default 2m.
	PresenceTTL time.Duration
	// RecentMessages is how many message ids per conversation are kept to
	// resolve "read up to message X". Default 128.
	RecentMessages int
	// DeadLetterMaxLen caps each dead-letter stream (MAXLEN ~). Default 100000.
	DeadLetterMaxLen int64
	// TrimInterval is how often processed entries are trimmed from the
	// streams of the shards this consumer owns. Default 5s.
	TrimInterval time.Duration
	// DefaultApp is the app whose users, conversations and event ids are
	// kept under their own names; every other app's are kept under
	// "<app>/<id>" (keys.Scope), so apps never touch each other's unread
	// state, dedupe or registry rows. Data written before apps were
	// isolated belongs to this app. Default event.DefaultApp ("default").
	DefaultApp string
	// ConversionWindow is how long after a reminder was pushed a read of
	// its conversation counts as its conversion (reminders_converted).
	// Default DefaultConversionWindow (1h).
	ConversionWindow time.Duration
	// Hooks, if set, is told of unread episodes that open and close (the
	// reminder scheduler). Default none.
	Hooks Hooks
	// Registry, if set, stores device and preference events (Postgres).
	// Default none: those events are only counted.
	Registry Registry
	// Metrics, if set, receives the consumer's Prometheus collectors
	// (nudge_ingest_*). Default none.
	Metrics prometheus.Registerer
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now; tests set it.
	Now func() time.Time
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("ingest: bad config")

func (c Config) withDefaults() (Config, error) {
	if c.Keyspace.Prefix == "" || c.Keyspace.Shards == 0 {
		c.Keyspace = keys.New(c.Keyspace.Prefix, c.Keyspace.Shards)
	}
	c.Group = cmp.Or(c.Group, DefaultGroup)
	c.DefaultApp = cmp.Or(c.DefaultApp, event.DefaultApp)
	if c.Consumer == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return c, fmt.Errorf("%w: Consumer is empty and the host name is unknown", ErrConfig)
		}
		c.Consumer = h
	}
	c.Block = cmp.Or(c.Block, time.Second)
	c.ClaimIdle = cmp.Or(c.ClaimIdle, 30*time.Second)
	c.DedupeWindow = cmp.Or(c.DedupeWindow, 10*time.Minute)
	c.UnreadTTL = cmp.Or(c.UnreadTTL, 30*24*time.Hour)
	c.PresenceTTL = cmp.Or(c.PresenceTTL, 2*time.Minute)
	c.TrimInterval = cmp.Or(c.TrimInterval, 5*time.Second)
	c.ConversionWindow = cmp.Or(c.ConversionWindow, DefaultConversionWindow)
	c.BatchSize = cmp.Or(c.BatchSize, 256)
	c.MaxDeliveries = cmp.Or(c.MaxDeliveries, 5)
	c.RecentMessages = cmp.Or(c.RecentMessages, 128)
	c.DeadLetterMaxLen = cmp.Or(c.DeadLetterMaxLen, 100000)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Keyspace.Shards < 1 || c.Keyspace.Shards > 1024:
		return c, fmt.Errorf("%w: Shards %d: want 1 to 1024", ErrConfig, c.Keyspace.Shards)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return c, fmt.Errorf("%w: BatchSize %d: want 1 to 10000", ErrConfig, c.BatchSize)
	case c.ClaimIdle < time.Second:
		return c, fmt.Errorf("%w: ClaimIdle %s: want at least 1s", ErrConfig, c.ClaimIdle)
	case c.Block <= 0 || c.Block >= c.ClaimIdle:
		return c, fmt.Errorf("%w: Block %s: want more than 0 and less than ClaimIdle", ErrConfig, c.Block)
	case c.MaxDeliveries < 1:
		return c, fmt.Errorf("%w: MaxDeliveries %d: want at least 1", ErrConfig, c.MaxDeliveries)
	case c.DedupeWindow < time.Second:
		return c, fmt.Errorf("%w: DedupeWindow %s: want at least 1s", ErrConfig, c.DedupeWindow)
	case c.UnreadTTL < time.Minute:
		return c, fmt.Errorf("%w: UnreadTTL %s: want at least 1m", ErrConfig, c.UnreadTTL)
	case c.PresenceTTL < time.Second:
		return c, fmt.Errorf("%w: PresenceTTL %s: want at least 1s", ErrConfig, c.PresenceTTL)
	case event.CheckApp(c.DefaultApp) != nil:
		return c, fmt.Errorf("%w: DefaultApp: %w", ErrConfig, event.CheckApp(c.DefaultApp))
	case c.RecentMessages < 1:
		return c, fmt.Errorf("%w: RecentMessages %d: want at least 1", ErrConfig, c.RecentMessages)
	}
	return c, nil
}
