-- 0002 registry: what the worker needs to know about users when a reminder
-- is due. Written by ingest from device and preference events; every row
-- carries the event's time in updated_at, and writers upsert with
-- "WHERE <table>.updated_at <= EXCLUDED.updated_at" so a late or replayed
-- event never overwrites a newer one.

CREATE TABLE devices (
    platform   text        NOT NULL CHECK (platform IN ('fcm', 'apns')),
    token      text        NOT NULL,
    user_id    text        NOT NULL,
    app        text        NOT NULL,
    locale     text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (platform, token)
);

CREATE INDEX devices_user_id_idx ON devices (user_id);

COMMENT ON TABLE devices IS
    'Push devices: a token belongs to one user at a time (re-registering moves it). Removed on a device-removed event or when the provider says the token is invalid.';
COMMENT ON COLUMN devices.token IS 'FCM registration token or APNs device token. Secret-ish: never log it in full.';
COMMENT ON COLUMN devices.locale IS 'BCP 47 language tag of the device, empty if unknown.';
COMMENT ON COLUMN devices.updated_at IS 'Time of the event that last wrote the row.';

CREATE TABLE user_prefs (
    user_id           text        PRIMARY KEY,
    app               text        NOT NULL DEFAULT '',
    time_zone         text        NOT NULL DEFAULT '',
    quiet_start       smallint    CHECK (quiet_start BETWEEN 0 AND 1439),
    quiet_end         smallint    CHECK (quiet_end BETWEEN 0 AND 1439),
    reminder_delay_ms bigint      CHECK (reminder_delay_ms >= 0),
    updated_at        timestamptz NOT NULL,
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);

COMMENT ON TABLE user_prefs IS 'Reminder preferences of a user.';
COMMENT ON COLUMN user_prefs.time_zone IS 'IANA time zone name (Europe/Paris); empty means UTC.';
COMMENT ON COLUMN user_prefs.quiet_start IS
    'Start of quiet hours, minute of the day in time_zone (0..1439); NULL with quiet_end: no quiet hours. quiet_start > quiet_end spans midnight.';
COMMENT ON COLUMN user_prefs.quiet_end IS 'End of quiet hours (exclusive), minute of the day in time_zone.';
COMMENT ON COLUMN user_prefs.reminder_delay_ms IS 'Delay before an unread reminder; NULL: the service default.';
COMMENT ON COLUMN user_prefs.updated_at IS 'Time of the event that last wrote the row.';

CREATE TABLE conversation_prefs (
    user_id         text        NOT NULL,
    conversation_id text        NOT NULL,
    mode            text        NOT NULL CHECK (mode IN ('all', 'mentions', 'muted')),
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (user_id, conversation_id)
);

COMMENT ON TABLE conversation_prefs IS
    'Per-conversation notification mode of a user; no row means all.';
COMMENT ON COLUMN conversation_prefs.mode IS 'all: remind for every message; mentions: only when mentioned; muted: never.';
COMMENT ON COLUMN conversation_prefs.updated_at IS 'Time of the event that last wrote the row.';
