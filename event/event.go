// Package event holds Nudge's event contract (v1): the Go types of the events
// producers publish, their decoder and their validator.
//
// An event is one JSON object per stream entry, under the entry field
// "event". Every event has a schema version "v" (1), a "type", a producer
// "id" unique per event (a re-published event keeps its id and is applied
// once), a "ts" in unix milliseconds and an optional "app" (tenant). The JSON
// Schema for producers in other languages is schema/event.v1.schema.json;
// docs/events.md has examples.
package event

import "time"

// Version is the only schema version this package accepts.
const Version = 1

// Event types.
const (
	TypeMessage          = "message.sent"        // a message was sent to recipients
	TypeRead             = "conversation.read"   // a user read a conversation (up to a message)
	TypePresence         = "presence"            // a device went online, offline or sent a heartbeat
	TypeDeviceRegistered = "device.registered"   // a push token was registered
	TypeDeviceRemoved    = "device.removed"      // a push token was removed
	TypePrefs            = "prefs.updated"       // a user changed reminder preferences
	TypeOpened           = "notification.opened" // a user opened a reminder push
)

// Presence statuses.
const (
	StatusOnline    = "online"
	StatusOffline   = "offline"
	StatusHeartbeat = "heartbeat"
)

// Push platforms.
const (
	PlatformFCM  = "fcm"
	PlatformAPNs = "apns"
)

// Conversation notification modes of a user (prefs.updated "conversations").
const (
	ModeAll      = "all"      // remind of every unread message (default)
	ModeMentions = "mentions" // remind only when the user was mentioned
	ModeMuted    = "muted"    // never remind
)

// DefaultApp is the app of an event that names none.
const DefaultApp = "default"

// Event is one decoded, validated event. Fields that do not belong to its
// Type are empty.
type Event struct {
	V    int    `json:"v"`
	Type string `json:"type"`
	ID   string `json:"id"`
	TS   int64  `json:"ts"`
	App  string `json:"app,omitempty"`

	// message.sent and conversation.read
	Conversation string `json:"conversation,omitempty"`

	// message.sent
	Message    string   `json:"message,omitempty"` // the message's id
	Sender     string   `json:"sender,omitempty"`
	Recipients []string `json:"recipients,omitempty"`
	Mentions   []string `json:"mentions,omitempty"`
	Preview    string   `json:"preview,omitempty"`
	// ConversationTitle names a group conversation in its reminders
	// ("Alice in Team chat: …"); the last one given stays.
	ConversationTitle string `json:"conversation_title,omitempty"`

	// conversation.read, presence, device.*, prefs.updated, notification.opened
	User string `json:"user,omitempty"`

	// notification.opened: the reminder opened, as its push's data named it
	// ("episode", "stage"); Platform (above, optional) is the device's.
	Episode string `json:"episode,omitempty"`
	Stage   int    `json:"stage,omitempty"`

	// conversation.read: the last message read; empty means all of them.
	UpTo string `json:"upto,omitempty"`

	// presence
	Status string `json:"status,omitempty"`
	Device string `json:"device,omitempty"` // a device id, to track several devices

	// device.registered, device.removed
	Platform string `json:"platform,omitempty"`
	Token    string `json:"token,omitempty"`
	Locale   string `json:"locale,omitempty"`
	// Topic is the bundle id of an iOS app (APNs), for an app that ships
	// several; empty: the app's first.
	Topic string `json:"topic,omitempty"`

	// prefs.updated: each field is optional; an absent field is unchanged.
	TimeZone       *string           `json:"time_zone,omitempty"`        // IANA name; "" means UTC
	QuietHours     *QuietHours       `json:"quiet_hours,omitempty"`      // start == end means none
	ReminderDelayS *int64            `json:"reminder_delay_s,omitempty"` // 0 means the app default
	Conversations  map[string]string `json:"conversations,omitempty"`    // conversation -> mode
	Previews       *string           `json:"previews,omitempty"`         // show, sender, hidden; "" means the app's
}

// What a user's reminders show (prefs.updated "previews"); the stricter of
// the user's and the app's setting applies.
const (
	PreviewsShow   = "show"   // the sender and the message
	PreviewsSender = "sender" // the sender only
	PreviewsHidden = "hidden" // neither
)

// QuietHours is a daily window, in the user's time zone, when reminders wait.
// Times are "HH:MM"; a window may cross midnight ("22:00" to "07:00").
type QuietHours struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Time returns the event's timestamp.
func (e *Event) Time() time.Time { return time.UnixMilli(e.TS) }

// RoutingKey is the id that picks the event's stream shard: the
// conversation for message and read events, the user for the others.
func (e *Event) RoutingKey() string {
	if e.Type == TypeMessage || e.Type == TypeRead {
		return e.Conversation
	}
	return e.User
}
