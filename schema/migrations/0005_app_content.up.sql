-- 0005 reminder content per app: the bundle id of an iOS device (an app
-- that ships several), and what a user's reminders show.

ALTER TABLE devices ADD COLUMN topic text NOT NULL DEFAULT '';
COMMENT ON COLUMN devices.topic IS
    'APNs topic (bundle id) of an iOS app that ships several; empty: the app''s first.';

ALTER TABLE user_prefs ADD COLUMN previews text NOT NULL DEFAULT ''
    CHECK (previews IN ('', 'show', 'sender', 'hidden'));
COMMENT ON COLUMN user_prefs.previews IS
    'What the user''s reminders show: show (sender and message), sender, hidden; empty: the app''s setting. The stricter of the two applies.';
