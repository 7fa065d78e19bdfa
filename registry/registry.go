// Package registry keeps what the reminder worker needs to know about
// users, in Postgres: their push devices and their reminder preferences.
// Ingest feeds it from device and preference events (Store implements
// ingest.Registry); the worker reads it through a short-lived cache.
package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nudgehq/nudge/event"
)

// MaxDevicesPerUser is how many devices a user keeps: registering one more
// drops the least recently registered.
const MaxDevicesPerUser = 10

// Device is a push target of a user.
type Device struct {
	Platform string // event.PlatformFCM or event.PlatformAPNs
	Token    string
	App      string
	Locale   string
	Topic    string // APNs bundle id; empty: the app's first
}

// Prefs are a user's reminder preferences (DefaultPrefs: none set).
type Prefs struct {
	TimeZone      string            // IANA name; empty: UTC
	QuietStart    int               // minute of the day; -1: no quiet hours
	QuietEnd      int               // minute of the day, exclusive
	ReminderDelay time.Duration     // 0: the app default
	Previews      string            // event.PreviewsShow, PreviewsSender, PreviewsHidden; "": the app's
	Modes         map[string]string // conversation -> event.ModeMentions or event.ModeMuted
}

// DefaultPrefs are the preferences of a user who set none: no quiet hours,
// nothing muted, the default mode and delay.
var DefaultPrefs = Prefs{QuietStart: -1, QuietEnd: -1}

// Mode returns the user's notification mode for a conversation.
func (p Prefs) Mode(conversation string) string {
	if m, ok := p.Modes[conversation]; ok {
		return m
	}
	return event.ModeAll
}

// Store reads and writes the registry tables (schema/migrations).
type Store struct {
	db *pgxpool.Pool
}

// New returns a Store on db.
func New(db *pgxpool.Pool) *Store { return &Store{db: db} }

// Apply writes device and preference events in one transaction, keeping the
// newest state by event ts, so replays and redeliveries change nothing.
// Other event types are ignored.
func (s *Store) Apply(ctx context.Context, events []*event.Event) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		for _, e := range events {
			var err error
			switch e.Type {
			case event.TypeDeviceRegistered:
				err = registerDevice(ctx, tx, e)
			case event.TypeDeviceRemoved:
				_, err = tx.Exec(ctx, `DELETE FROM devices WHERE platform = $1 AND token = $2 AND user_id = $3 AND updated_at <= $4`,
					e.Platform, e.Token, e.User, e.Time())
			case event.TypePrefs:
				err = updatePrefs(ctx, tx, e)
			}
			if err != nil {
				return fmt.Errorf("registry: %s %s: %w", e.Type, e.ID, err)
			}
		}
		return nil
	})
}

func registerDevice(ctx context.Context, tx pgx.Tx, e *event.Event) error {
	_, err := tx.Exec(ctx, `
INSERT INTO devices (platform, token, user_id, app, locale, topic, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (platform, token) DO UPDATE
SET user_id = EXCLUDED.user_id, app = EXCLUDED.app, locale = EXCLUDED.locale, topic = EXCLUDED.topic, updated_at = EXCLUDED.updated_at
WHERE devices.updated_at <= EXCLUDED.updated_at`,
		e.Platform, e.Token, e.User, e.App, e.Locale, e.Topic, e.Time())
	if err != nil {
		return err
	}
	// Keep the user's newest devices only.
	_, err = tx.Exec(ctx, `
DELETE FROM devices WHERE (platform, token) IN (
  SELECT platform, token FROM devices WHERE user_id = $1
  ORDER BY updated_at DESC, token OFFSET $2)`, e.User, MaxDevicesPerUser)
	return err
}

func updatePrefs(ctx context.Context, tx pgx.Tx, e *event.Event) error {
	if e.TimeZone != nil || e.QuietHours != nil || e.ReminderDelayS != nil || e.Previews != nil {
		var (
			tz           *string
			setQuiet     bool
			qStart, qEnd *int
			delay        *int64
			setDelay     bool
		)
		tz = e.TimeZone
		if q := e.QuietHours; q != nil {
			setQuiet = true
			a, _ := event.ParseClock(q.Start)
			b, _ := event.ParseClock(q.End)
			if a != b {
				qStart, qEnd = &a, &b
			}
		}
		if d := e.ReminderDelayS; d != nil {
			setDelay = true
			if *d > 0 {
				ms := *d * 1000
				delay = &ms
			}
		}
		_, err := tx.Exec(ctx, `
INSERT INTO user_prefs (user_id, app, time_zone, quiet_start, quiet_end, reminder_delay_ms, updated_at, previews)
VALUES ($1, $2, COALESCE($3, ''), $5, $6, $8, $9, COALESCE($10, ''))
ON CONFLICT (user_id) DO UPDATE SET
  app = EXCLUDED.app,
  time_zone = COALESCE($3, user_prefs.time_zone),
  previews = COALESCE($10, user_prefs.previews),
  quiet_start = CASE WHEN $4 THEN EXCLUDED.quiet_start ELSE user_prefs.quiet_start END,
  quiet_end = CASE WHEN $4 THEN EXCLUDED.quiet_end ELSE user_prefs.quiet_end END,
  reminder_delay_ms = CASE WHEN $7 THEN EXCLUDED.reminder_delay_ms ELSE user_prefs.reminder_delay_ms END,
  updated_at = EXCLUDED.updated_at
WHERE user_prefs.updated_at <= EXCLUDED.updated_at`,
			e.User, e.App, tz, setQuiet, qStart, qEnd, setDelay, delay, e.Time(), e.Previews)
		if err != nil {
			return err
		}
	}
	for conv, mode := range e.Conversations {
		_, err := tx.Exec(ctx, `
INSERT INTO conversation_prefs (user_id, conversation_id, mode, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, conversation_id) DO UPDATE SET mode = EXCLUDED.mode, updated_at = EXCLUDED.updated_at
WHERE conversation_prefs.updated_at <= EXCLUDED.updated_at`, e.User, conv, mode, e.Time())
		if err != nil {
			return err
		}
	}
	return nil
}

// Devices returns a user's devices, newest first.
func (s *Store) Devices(ctx context.Context, user string) ([]Device, error) {
	m, err := s.DevicesOf(ctx, []string{user})
	return m[user], err
}

// DevicesOf returns the devices of each of users that has any, newest
// first, at most MaxDevicesPerUser each, in one query.
func (s *Store) DevicesOf(ctx context.Context, users []string) (map[string][]Device, error) {
	out := make(map[string][]Device, len(users))
	if len(users) == 0 {
		return out, nil
	}
	rows, err := s.db.Query(ctx, `SELECT user_id, platform, token, app, locale, topic FROM devices WHERE user_id = ANY($1) ORDER BY user_id, updated_at DESC, token`, users)
	if err != nil {
		return nil, fmt.Errorf("registry: devices of %d users: %w", len(users), err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			user string
			d    Device
		)
		if err := rows.Scan(&user, &d.Platform, &d.Token, &d.App, &d.Locale, &d.Topic); err != nil {
			return nil, fmt.Errorf("registry: devices: %w", err)
		}
		if len(out[user]) < MaxDevicesPerUser {
			out[user] = append(out[user], d)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: devices of %d users: %w", len(users), err)
	}
	return out, nil
}

// RemoveToken deletes a token the provider rejected as invalid.
func (s *Store) RemoveToken(ctx context.Context, platform, token string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM devices WHERE platform = $1 AND token = $2`, platform, token); err != nil {
		return fmt.Errorf("registry: remove token: %w", err)
	}
	return nil
}

// Prefs returns a user's preferences; a user without any gets defaults.
func (s *Store) Prefs(ctx context.Context, user string) (Prefs, error) {
	m, err := s.PrefsOf(ctx, []string{user})
	if err != nil {
		return DefaultPrefs, err
	}
	return m[user], nil
}

// PrefsOf returns the preferences of each of users (defaults for one
// without any), in two queries.
func (s *Store) PrefsOf(ctx context.Context, users []string) (map[string]Prefs, error) {
	out := make(map[string]Prefs, len(users))
	for _, u := range users {
		out[u] = DefaultPrefs
	}
	if len(users) == 0 {
		return out, nil
	}
	rows, err := s.db.Query(ctx, `SELECT user_id, time_zone, quiet_start, quiet_end, reminder_delay_ms, previews FROM user_prefs WHERE user_id = ANY($1)`, users)
	if err != nil {
		return nil, fmt.Errorf("registry: prefs of %d users: %w", len(users), err)
	}
	for rows.Next() {
		var (
			user   string
			tz     string
			qs, qe *int16
			delay  *int64
			prev   string
		)
		if err := rows.Scan(&user, &tz, &qs, &qe, &delay, &prev); err != nil {
			rows.Close()
			return nil, fmt.Errorf("registry: prefs: %w", err)
		}
		p := out[user]
		p.TimeZone, p.Previews = tz, prev
		if qs != nil && qe != nil {
			p.QuietStart, p.QuietEnd = int(*qs), int(*qe)
		}
		if delay != nil {
			p.ReminderDelay = time.Duration(*delay) * time.Millisecond
		}
		out[user] = p
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: prefs of %d users: %w", len(users), err)
	}
	rows, err = s.db.Query(ctx, `SELECT user_id, conversation_id, mode FROM conversation_prefs WHERE user_id = ANY($1) AND mode <> 'all'`, users)
	if err != nil {
		return nil, fmt.Errorf("registry: conversation prefs of %d users: %w", len(users), err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, conv, mode string
		if err := rows.Scan(&user, &conv, &mode); err != nil {
			return nil, fmt.Errorf("registry: conversation prefs: %w", err)
		}
		p := out[user]
		if p.Modes == nil {
			p.Modes = map[string]string{}
		}
		p.Modes[conv] = mode
		out[user] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("registry: conversation prefs of %d users: %w", len(users), err)
	}
	return out, nil
}

// ReminderDelays returns the first-reminder delay of each user that has one
// set (users without one are absent: they get the default), in one query.
func (s *Store) ReminderDelays(ctx context.Context, users []string) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(users))
	if len(users) == 0 {
		return out, nil
	}
	rows, err := s.db.Query(ctx, `SELECT user_id, reminder_delay_ms FROM user_prefs WHERE user_id = ANY($1) AND reminder_delay_ms IS NOT NULL`, users)
	if err != nil {
		return out, fmt.Errorf("registry: reminder delays of %d users: %w", len(users), err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			user string
			ms   int64
		)
		if err := rows.Scan(&user, &ms); err != nil {
			return out, fmt.Errorf("registry: reminder delays: %w", err)
		}
		if ms > 0 {
			out[user] = time.Duration(ms) * time.Millisecond
		}
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("registry: reminder delays: %w", err)
	}
	return out, nil
}
