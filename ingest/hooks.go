package ingest

import (
	"context"
	"time"

	"github.com/nudgehq/nudge/event"
)

// Episode is an unread episode of a user in a conversation: it opens with
// the first message the user has not read and ends when the user reads the
// conversation (or writes to it). Its ID is the stream entry id of the
// message that opened it, unique for the life of the stream. User and
// Conversation are scoped names (keys.Scope): "<app>/<id>" for an app other
// than the default.
type Episode struct {
	Shard        int
	App          string
	User         string
	Conversation string
	ID           string
	Mentioned    bool      // the opening message mentioned the user
	OpenedAt     time.Time // the opening message's ts
	AppliedAt    time.Time // when ingest applied the opening message
}

// Hooks is told of unread episodes. The reminder scheduler implements it.
//
// The apply script records the episodes a batch opens and closes in the
// shard's outbox, atomically with the unread state, and the shard's relay
// hands them to Hooks after the batch was applied, outside the shard loop:
// scheduling never holds back unread state and counters, and a crash never
// loses a reminder (the outbox entry stays until Hooks took it). A relay
// retries a failing call until it succeeds, and may call again with the same
// episodes (a crash, a new owner of the shard), so every method must be
// idempotent.
type Hooks interface {
	// EpisodesOpened is called with episodes that opened, in the order
	// they opened. It returns the counter increments to record with the
	// outbox entries they came from: they are recorded once, however often
	// the episodes are handed over.
	EpisodesOpened(ctx context.Context, eps []Episode) (Counts, error)
	// EpisodesClosed is called with episodes a read or a reply ended,
	// after EpisodesOpened was called with them.
	EpisodesClosed(ctx context.Context, eps []Episode) error
	// Counted is told of counts EpisodesOpened returned once they are
	// recorded (for the process's own metrics).
	Counted(Counts)
}

// Registry stores device registrations and user preferences. The shard's
// registry relay calls it with the device.registered, device.removed and
// prefs.updated events ingest applied, their user and conversations under
// scoped names (keys.Scope), in stream order, after they were
// applied and outside the shard loop: a PostgreSQL outage delays the
// registry, never the unread state. It must be idempotent (events may be
// handed over again) and keep the newest state by event ts.
type Registry interface {
	Apply(ctx context.Context, events []*event.Event) error
}
