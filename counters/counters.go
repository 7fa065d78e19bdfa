// Package counters names Nudge's analytics metrics and encodes their
// dimensions.
//
// Counters are incremented in Redis on the hot path, in one hash per shard
// and minute (keys.Counters), under a field that joins the dimensions:
// "metric|app|platform|reason". The flusher moves closed minutes to
// Postgres. Dimensions that do not apply are empty strings.
package counters

import (
	"errors"
	"strings"
	"time"
)

// Metric names. Each is a column value in Postgres and a series in reports.
const (
	// Ingest.
	MessagesSent     = "messages_sent"        // message events applied
	RecipientsFanned = "recipients"           // recipients of applied messages
	Mentions         = "mentions"             // mentions in applied messages
	Reads            = "reads"                // read events applied
	EpisodesOpened   = "episodes_opened"      // unread episodes opened
	EpisodesClosed   = "episodes_closed"      // unread episodes ended by a read
	PresenceEvents   = "presence_events"      // presence events applied
	DeviceEvents     = "device_events"        // device registered/removed events applied
	PrefsEvents      = "prefs_events"         // preference events applied
	OpenedEvents     = "opened_events"        // notification.opened events applied (reminders_opened counts each reminder once)
	Duplicates       = "duplicates"           // events re-published with an id already applied
	DeadLettered     = "dead_lettered"        // entries sent to the dead-letter stream, by reason
	EventsApplied    = "events_applied"       // every applied event, any type
	ActiveUsers      = "active_users"         // distinct users of a day (a gauge, from HyperLogLog)
	RemindersQueued  = "reminders_scheduled"  // reminder tasks scheduled
	RemindersCancel  = "reminders_cancelled"  // reminders cancelled by a read
	RemindersSuppr   = "reminders_suppressed" // reminders dropped (muted, mentions only, no devices, digested), by reason
	RemindersDefer   = "reminders_deferred"   // reminders put off (online, quiet hours, rate limit), by reason
	RemindersSent    = "reminders_sent"       // reminders delivered to at least one device
	RemindersFailed  = "reminders_failed"     // reminders that no device accepted
	PushSent         = "push_sent"            // pushes accepted by a provider, by platform
	PushFailed       = "push_failed"          // pushes failed, by platform and reason
	PushUnknown      = "push_unknown"         // pushes whose answer was lost (timeout): maybe delivered, never re-sent
	TokensRemoved    = "tokens_removed"       // device tokens removed as invalid, by platform

	// Reminder effectiveness, by app, platform and stage (the reason
	// dimension holds the stage, "1", "2", ...). Platform is the one the
	// reminder reached, or PlatformSeveral.
	RemindersPushed    = "reminders_pushed"      // reminders pushed to at least one device (reminders_sent, by stage and platform)
	RemindersOpened    = "reminders_opened"      // reminders opened (notification.opened), once per user, episode and stage
	RemindersConverted = "reminders_converted"   // reads published within the conversion window after a reminder was pushed, attributed to the last stage pushed before them
	ReadDelay          = "reminder_read_seconds" // conversions by time from push to read: reason "<stage>:<upper bound in s>" (a histogram)
)

// PlatformSeveral is the platform of a reminder that reached devices of both
// platforms.
const PlatformSeveral = "several"

// ReadDelayBuckets are the upper bounds, in seconds, of the ReadDelay
// histogram; a conversion later than the last is in the last.
var ReadDelayBuckets = []int{30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 7200, 14400, 43200, 86400}

// ReadDelayBucket returns the bucket of ReadDelayBuckets a time from push
// to read falls in, as ingest's apply script picks it.
func ReadDelayBucket(d time.Duration) int {
	for _, b := range ReadDelayBuckets {
		if d <= time.Duration(b)*time.Second {
			return b
		}
	}
	return ReadDelayBuckets[len(ReadDelayBuckets)-1]
}

// Sep separates dimensions in a counter field. Dimension values never
// contain it (the event validator forbids it in ids and app names).
const Sep = "|"

// ErrBadField is returned by ParseField for a field that is not four
// dimensions joined by Sep.
var ErrBadField = errors.New("counters: bad field")

// Dims are the dimensions of one counter.
type Dims struct {
	Metric   string
	App      string
	Platform string
	Reason   string
}

// Field encodes d as a hash field.
func Field(d Dims) string {
	return d.Metric + Sep + d.App + Sep + d.Platform + Sep + d.Reason
}

// ParseField decodes a hash field written by Field.
func ParseField(f string) (Dims, error) {
	p := strings.Split(f, Sep)
	if len(p) != 4 || p[0] == "" {
		return Dims{}, ErrBadField
	}
	return Dims{Metric: p[0], App: p[1], Platform: p[2], Reason: p[3]}, nil
}
