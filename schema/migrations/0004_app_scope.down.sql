COMMENT ON COLUMN devices.user_id IS NULL;
COMMENT ON COLUMN devices.app IS NULL;
COMMENT ON COLUMN user_prefs.user_id IS NULL;
COMMENT ON COLUMN conversation_prefs.user_id IS NULL;
COMMENT ON COLUMN conversation_prefs.conversation_id IS NULL;
