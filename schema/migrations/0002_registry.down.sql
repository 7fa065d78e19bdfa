DROP TABLE conversation_prefs;
DROP TABLE user_prefs;
DROP TABLE devices;
