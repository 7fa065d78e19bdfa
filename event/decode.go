package event

// This file is the whole decoder, and over 400 lines on purpose: the
// contract's limits, the reasons of a rejection, then each event type's
// rules in the order of docs/events.md, so that it reads against the
// published schema from top to bottom.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	_ "time/tzdata" // time zones are validated the same on every machine and image
)

// Limits of the contract. An event over a limit is rejected whole: a
// producer truncates previews itself.
const (
	MaxEventBytes    = 64 << 10 // a whole encoded event
	MaxIDBytes       = 128      // event, user, conversation, message and device ids
	MaxAppBytes      = 64       // app names
	MaxPreviewBytes  = 4096     // message preview text
	MaxTitleBytes    = 1024     // conversation title
	MaxTopicBytes    = 255      // APNs topic (bundle id)
	MaxTokenBytes    = 4096     // push tokens
	MaxRecipients    = 10000    // recipients of one message
	MaxPrefsConvs    = 1000     // conversations in one prefs.updated
	MaxReminderDelay = 7 * 24 * 3600
	minTS            = 946684800000  // 2000-01-01, in ms: a ts in seconds is rejected
	maxTS            = 4102444800000 // 2100-01-01
)

// Reason is a stable label for why an entry was rejected. It is written to
// the dead-letter stream and counted per reason.
type Reason string

// Rejection reasons of the decoder. Ingest adds a few of its own.
const (
	ReasonTooLarge      Reason = "too_large"
	ReasonInvalidUTF8   Reason = "invalid_utf8"
	ReasonInvalidJSON   Reason = "invalid_json"
	ReasonDuplicateKey  Reason = "duplicate_key"
	ReasonVersion       Reason = "unsupported_version"
	ReasonUnknownType   Reason = "unknown_type"
	ReasonMissingField  Reason = "missing_field"
	ReasonInvalidField  Reason = "invalid_field"
	ReasonFieldTooLarge Reason = "field_too_large"
)

// Error is a rejected event: why, and which field.
type Error struct {
	Reason Reason
	Field  string // the JSON field, when one is to blame
	Detail string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("event: %s: %s: %s", e.Reason, e.Field, e.Detail)
	}
	return fmt.Sprintf("event: %s: %s", e.Reason, e.Detail)
}

// ReasonOf returns the Reason of an *Error, or ReasonInvalidJSON.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonInvalidJSON
}

func fail(r Reason, field, format string, args ...any) *Error {
	return &Error{Reason: r, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// Decode parses and validates one event. Any error is an *Error.
func Decode(data []byte) (*Event, error) {
	var e Event
	if err := DecodeInto(data, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// DecodeString is Decode of a string, such as a stream entry's field. An
// event over MaxEventBytes is rejected before it is copied.
func DecodeString(s string) (*Event, error) {
	if len(s) > MaxEventBytes {
		return nil, tooLarge(len(s))
	}
	return Decode([]byte(s))
}

// DecodeInto is Decode into a caller's Event, which it resets first.
func DecodeInto(data []byte, e *Event) error {
	*e = Event{}
	if len(data) > MaxEventBytes {
		return tooLarge(len(data))
	}
	if !utf8.Valid(data) {
		return fail(ReasonInvalidUTF8, "", "payload is not valid UTF-8")
	}
	if i := firstNonSpace(data); i < 0 || data[i] != '{' {
		return fail(ReasonInvalidJSON, "", "an event is a JSON object")
	}
	if err := json.Unmarshal(data, e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fail(ReasonInvalidField, te.Field, "want a JSON %s, got %s", te.Type, te.Value)
		}
		return fail(ReasonInvalidJSON, "", "%v", err)
	}
	if key, dup, bad := checkKeys(data); bad {
		if dup {
			return fail(ReasonDuplicateKey, key, "the key appears twice in one object")
		}
		return fail(ReasonInvalidField, key, "field names are case-sensitive")
	}
	return Validate(e)
}

func tooLarge(n int) *Error {
	return fail(ReasonTooLarge, "", "%d bytes, limit %d", n, MaxEventBytes)
}

func firstNonSpace(b []byte) int {
	for i, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			return i
		}
	}
	return -1
}

// Validate checks an event against the contract and fills defaults (app,
// de-duplicated recipients). Decode calls it; producers call it before
// publishing.
func Validate(e *Event) error {
	if e.V != Version {
		if e.V == 0 {
			return fail(ReasonMissingField, "v", "the schema version is required")
		}
		return fail(ReasonVersion, "v", "version %d is not supported, only %d", e.V, Version)
	}
	if e.Type == "" {
		return fail(ReasonMissingField, "type", "required")
	}
	if err := checkID("id", e.ID, true); err != nil {
		return err
	}
	if e.TS == 0 {
		return fail(ReasonMissingField, "ts", "required (unix milliseconds)")
	}
	if e.TS < minTS || e.TS > maxTS {
		return fail(ReasonInvalidField, "ts", "%d is not unix milliseconds between 2000 and 2100", e.TS)
	}
	if e.App == "" {
		e.App = DefaultApp
	} else if err := checkApp(e.App); err != nil {
		return err
	}
	switch e.Type {
	case TypeMessage:
		return validateMessage(e)
	case TypeRead:
		if err := checkID("conversation", e.Conversation, true); err != nil {
			return err
		}
		if err := checkID("user", e.User, true); err != nil {
			return err
		}
		return checkID("upto", e.UpTo, false)
	case TypePresence:
		if err := checkID("user", e.User, true); err != nil {
			return err
		}
		switch e.Status {
		case StatusOnline, StatusOffline, StatusHeartbeat:
		case "":
			return fail(ReasonMissingField, "status", "required")
		default:
			return fail(ReasonInvalidField, "status", "want online, offline or heartbeat")
		}
		return checkID("device", e.Device, false)
	case TypeDeviceRegistered, TypeDeviceRemoved:
		return validateDevice(e)
	case TypePrefs:
		return validatePrefs(e)
	case TypeOpened:
		return validateOpened(e)
	default:
		return fail(ReasonUnknownType, "type", "%q is not an event type of version %d", clip(e.Type), Version)
	}
}

func validateMessage(e *Event) error {
	if err := checkID("conversation", e.Conversation, true); err != nil {
		return err
	}
	if err := checkID("message", e.Message, true); err != nil {
		return err
	}
	if err := checkID("sender", e.Sender, true); err != nil {
		return err
	}
	if len(e.Recipients) == 0 {
		return fail(ReasonMissingField, "recipients", "at least one recipient is required")
	}
	if len(e.Recipients) > MaxRecipients {
		return fail(ReasonFieldTooLarge, "recipients", "%d recipients, limit %d", len(e.Recipients), MaxRecipients)
	}
	if len(e.Mentions) > MaxRecipients {
		return fail(ReasonFieldTooLarge, "mentions", "%d mentions, limit %d", len(e.Mentions), MaxRecipients)
	}
	var err error
	if e.Recipients, err = uniqueIDs("recipients", e.Recipients); err != nil {
		return err
	}
	if e.Mentions, err = uniqueIDs("mentions", e.Mentions); err != nil {
		return err
	}
	if len(e.Preview) > MaxPreviewBytes {
		return fail(ReasonFieldTooLarge, "preview", "%d bytes, limit %d", len(e.Preview), MaxPreviewBytes)
	}
	if len(e.ConversationTitle) > MaxTitleBytes {
		return fail(ReasonFieldTooLarge, "conversation_title", "%d bytes, limit %d", len(e.ConversationTitle), MaxTitleBytes)
	}
	return nil
}

func validateDevice(e *Event) error {
	if err := checkID("user", e.User, true); err != nil {
		return err
	}
	switch e.Platform {
	case PlatformFCM, PlatformAPNs:
	case "":
		return fail(ReasonMissingField, "platform", "required")
	default:
		return fail(ReasonInvalidField, "platform", "want fcm or apns")
	}
	if e.Token == "" {
		return fail(ReasonMissingField, "token", "required")
	}
	if len(e.Token) > MaxTokenBytes {
		return fail(ReasonFieldTooLarge, "token", "%d bytes, limit %d", len(e.Token), MaxTokenBytes)
	}
	for i := 0; i < len(e.Token); i++ {
		if c := e.Token[i]; c <= ' ' || c >= 0x7f {
			return fail(ReasonInvalidField, "token", "a token is printable ASCII without spaces")
		}
	}
	if len(e.Locale) > 35 {
		return fail(ReasonFieldTooLarge, "locale", "%d bytes, limit 35", len(e.Locale))
	}
	if e.Locale != "" {
		if !localeTag.MatchString(e.Locale) {
			return fail(ReasonInvalidField, "locale", "want a BCP 47 language tag such as de-DE")
		}
		e.Locale = strings.ReplaceAll(e.Locale, "_", "-") // en_US, as Java and Android write it
	}
	if len(e.Topic) > MaxTopicBytes {
		return fail(ReasonFieldTooLarge, "topic", "%d bytes, limit %d", len(e.Topic), MaxTopicBytes)
	}
	for i := 0; i < len(e.Topic); i++ {
		if c := e.Topic[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return fail(ReasonInvalidField, "topic", "a topic is a bundle id: letters, digits, . and - only")
		}
	}
	return nil
}

// localeTag is a well-formed BCP 47 language tag (RFC 5646 langtag, or a
// private-use tag): language, then optional script, region, variants,
// extensions and private use, separated by hyphens (or underscores, as
// Java and Android write them; stored with hyphens). The JSON Schema's
// locale pattern is the same expression.
var localeTag = regexp.MustCompile(LocalePattern)

// LocalePattern is the regular expression of a device event's locale.
const LocalePattern = `^(?:(?:[A-Za-z]{2,3}(?:[-_][A-Za-z]{3}){0,3}|[A-Za-z]{4,8})(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?` +
	`(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*(?:[-_][0-9A-WY-Za-wy-z](?:[-_][A-Za-z0-9]{2,8})+)*(?:[-_][Xx](?:[-_][A-Za-z0-9]{1,8})+)?` +
	`|[Xx](?:[-_][A-Za-z0-9]{1,8})+)$`

// MaxStage bounds the stage of an opened reminder (a ladder is a few stages).
const MaxStage = 100

func validateOpened(e *Event) error {
	if err := checkID("user", e.User, true); err != nil {
		return err
	}
	if err := checkID("episode", e.Episode, true); err != nil {
		return err
	}
	if e.Stage < 1 || e.Stage > MaxStage {
		if e.Stage == 0 {
			return fail(ReasonMissingField, "stage", "required: the \"stage\" of the push's data")
		}
		return fail(ReasonInvalidField, "stage", "want 1 to %d", MaxStage)
	}
	switch e.Platform {
	case "", PlatformFCM, PlatformAPNs:
	default:
		return fail(ReasonInvalidField, "platform", "want fcm or apns")
	}
	return checkID("conversation", e.Conversation, false)
}

func validatePrefs(e *Event) error {
	if err := checkID("user", e.User, true); err != nil {
		return err
	}
	if len(e.Conversations) == 0 {
		e.Conversations = nil // {} sets nothing
	}
	if e.TimeZone == nil && e.QuietHours == nil && e.ReminderDelayS == nil && e.Conversations == nil && e.Previews == nil {
		return fail(ReasonMissingField, "time_zone", "a prefs.updated event sets at least one preference")
	}
	if e.TimeZone != nil && *e.TimeZone != "" {
		if _, err := LoadLocation(*e.TimeZone); err != nil {
			return fail(ReasonInvalidField, "time_zone", "%q is not an IANA time zone", clip(*e.TimeZone))
		}
	}
	if q := e.QuietHours; q != nil {
		if _, err := ParseClock(q.Start); err != nil {
			return fail(ReasonInvalidField, "quiet_hours.start", "%v", err)
		}
		if _, err := ParseClock(q.End); err != nil {
			return fail(ReasonInvalidField, "quiet_hours.end", "%v", err)
		}
	}
	if p := e.Previews; p != nil {
		switch *p {
		case "", PreviewsShow, PreviewsSender, PreviewsHidden:
		default:
			return fail(ReasonInvalidField, "previews", "want show, sender, hidden or \"\" (the app's)")
		}
	}
	if d := e.ReminderDelayS; d != nil && (*d < 0 || *d > MaxReminderDelay) {
		return fail(ReasonInvalidField, "reminder_delay_s", "want 0 to %d seconds", MaxReminderDelay)
	}
	if len(e.Conversations) > MaxPrefsConvs {
		return fail(ReasonFieldTooLarge, "conversations", "%d conversations, limit %d", len(e.Conversations), MaxPrefsConvs)
	}
	for conv, mode := range e.Conversations {
		if err := checkID("conversations", conv, true); err != nil {
			return err
		}
		switch mode {
		case ModeAll, ModeMentions, ModeMuted:
		default:
			return fail(ReasonInvalidField, "conversations", "mode %q: want all, mentions or muted", clip(mode))
		}
	}
	return nil
}

// ParseClock parses "HH:MM" into minutes after midnight.
func ParseClock(s string) (int, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("%q is not HH:MM", clip(s))
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 || s[0] == '+' || s[3] == '+' || s[0] == '-' || s[3] == '-' {
		return 0, fmt.Errorf("%q is not HH:MM", clip(s))
	}
	return h*60 + m, nil
}

// LoadLocation loads an IANA time zone, refusing names that are not zone
// names (paths, empty segments).
func LoadLocation(name string) (*time.Location, error) {
	if len(name) > 64 {
		return nil, errors.New("time zone name too long")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '/' || c == '_' || c == '-' || c == '+') {
			return nil, errors.New("bad character in time zone name")
		}
	}
	if name == "" || name[0] == '/' || bytes.Contains([]byte(name), []byte("//")) || name == "Local" {
		return nil, errors.New("not a time zone name")
	}
	return time.LoadLocation(name)
}

// validID reports whether c may appear in an id: letters, digits and
// "._@:~-" (never the counter and key separator "|", the app scope
// separator "/" of keys.Scope, spaces or braces).
func validID(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '@' || c == ':' || c == '~' || c == '-'
}

func checkID(field, v string, required bool) error {
	if v == "" {
		if required {
			return fail(ReasonMissingField, field, "required")
		}
		return nil
	}
	if len(v) > MaxIDBytes {
		return fail(ReasonFieldTooLarge, field, "%d bytes, limit %d", len(v), MaxIDBytes)
	}
	for i := 0; i < len(v); i++ {
		if !validID(v[i]) {
			return fail(ReasonInvalidField, field, "ids use letters, digits and . _ @ : ~ - only")
		}
	}
	return nil
}

// CheckApp reports whether name is a valid app name: 1 to MaxAppBytes
// letters, digits and "._-".
func CheckApp(name string) error {
	if name == "" {
		return fail(ReasonMissingField, "app", "empty app name")
	}
	return checkApp(name)
}

func checkApp(v string) error {
	if len(v) > MaxAppBytes {
		return fail(ReasonFieldTooLarge, "app", "%d bytes, limit %d", len(v), MaxAppBytes)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fail(ReasonInvalidField, "app", "app names use letters, digits and . _ - only")
		}
	}
	return nil
}

// uniqueIDs validates ids and drops repeats, keeping the first order.
func uniqueIDs(field string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return ids, nil
	}
	for _, id := range ids {
		if err := checkID(field, id, true); err != nil {
			return nil, err
		}
	}
	if len(ids) <= 16 { // the common case: no map, and no copy without repeats
		var out []string // nil until the first repeat
		for i, id := range ids {
			dup := false
			for _, o := range ids[:i] {
				if o == id {
					dup = true
					break
				}
			}
			switch {
			case dup && out == nil:
				out = append(make([]string, 0, len(ids)-1), ids[:i]...)
			case !dup && out != nil:
				out = append(out, id)
			}
		}
		if out == nil {
			return ids, nil
		}
		return out, nil
	}
	seen := make(map[string]struct{}, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out, nil
}

// clip shortens user input quoted in an error message.
func clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	for i := 40; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}
