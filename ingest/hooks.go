package ingest

import (
	"context"
	"time"

	"github.com/nudgehq/nudge/event"
)

// Episode is an unread episode of a user in a conversation: it opens with
// the first message the user has not read and ends when the user reads the
// conversation (or writes to it). Its ID is the stream entry id of the
// message that opened it, unique for the life of the stream.
type Episode struct {
	Shard        int
	App          string
	User         string
	Conversation string
	ID           string
	Mentioned    bool      // the opening message mentioned the user
	OpenedAt     time.Time // the opening message's ts
}

// Hooks is told of unread episodes. The reminder scheduler implements it.
type Hooks interface {
	// EpisodesOpened is called with the episodes a batch may open, before
	// the batch is acknowledged: if it returns an error the batch is not
	// applied and is retried, so a crash cannot lose a reminder. It may be
	// called again for the same episodes (redelivery), and with episodes
	// that end up not opening (a duplicate event, say), so it must be
	// idempotent, and whatever it schedules must re-check the state.
	EpisodesOpened(ctx context.Context, eps []Episode) error
	// EpisodesClosed is called after a batch that ended episodes was
	// applied. It is best effort: a crash may skip it.
	EpisodesClosed(ctx context.Context, eps []Episode)
}

// Registry stores device registrations and user preferences. Ingest calls
// it before a batch is acknowledged, with the batch's device.registered,
// device.removed and prefs.updated events, in stream order; it must be
// idempotent (events may be delivered again) and keep the newest state by
// event ts.
type Registry interface {
	Apply(ctx context.Context, events []*event.Event) error
}
