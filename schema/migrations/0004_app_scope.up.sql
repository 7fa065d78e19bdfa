-- 0004 apps share nothing: the registry keeps the users and conversations
-- of each app under their scoped names, as Redis does (docs/keys.md): the
-- id itself for the default app (ingest's default-app setting, "default"
-- unless set), "<app>/<id>" for any other. Rows written before apps were
-- isolated hold bare ids and so belong to the default app, like the unread
-- state in Redis: no row changes. A deployment whose events all named one
-- app sets default-app to it and keeps everything where it was.

COMMENT ON COLUMN devices.user_id IS
    'Scoped user id: the id for the default app, <app>/<id> for another app.';
COMMENT ON COLUMN devices.app IS
    'The app the device installed: its push credentials are this app''s.';
COMMENT ON COLUMN user_prefs.user_id IS
    'Scoped user id: the id for the default app, <app>/<id> for another app.';
COMMENT ON COLUMN conversation_prefs.user_id IS
    'Scoped user id: the id for the default app, <app>/<id> for another app.';
COMMENT ON COLUMN conversation_prefs.conversation_id IS
    'Scoped conversation id: the id for the default app, <app>/<id> for another app.';
