ALTER TABLE user_prefs DROP COLUMN previews;
ALTER TABLE devices DROP COLUMN topic;
