package loadgen

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/keys"
)

// Sentinel errors of the package.
var (
	// ErrConfig wraps every reason a Config is rejected.
	ErrConfig = errors.New("loadgen: invalid config")
	// ErrRunning is returned by a second call of Runner.Run: a Runner holds
	// the generator's state and runs once.
	ErrRunning = errors.New("loadgen: a Runner runs once")
)

// Defaults of Config.
const (
	DefaultUsers              = 10_000
	DefaultConversations      = 2_000
	DefaultGroupFraction      = 0.3
	DefaultGroupSizeMin       = 3
	DefaultGroupSizeMax       = 50
	DefaultLargeGroupFraction = 0.01
	DefaultLargeGroupSize     = 500
	DefaultZipfS              = 1.1
	DefaultMentionRate        = 0.1
	DefaultReadProbability    = 0.8
	DefaultReadDelay          = 30 * time.Second
	DefaultReadDelayMax       = 30 * time.Minute
	DefaultReadDelaySigma     = 1.0
	DefaultPartialReadRate    = 0.1
	DefaultPresenceRate       = 0.2
	DefaultDeviceFraction     = 0.5
	DefaultAPNsFraction       = 0.4
	DefaultDeviceChurnRate    = 0.002
	DefaultPrefsFraction      = 0.1
	DefaultBatchSize          = 200
	DefaultTimeScale          = 1.0
	DefaultProgressInterval   = time.Second
	DefaultPublishTimeout     = 10 * time.Second

	// MaxGroupSize bounds group sizes: a message to that many members still
	// fits the contract's 64 KiB event limit with the generator's user ids.
	MaxGroupSize = 5_000
	// MaxBatchSize bounds BatchSize.
	MaxBatchSize = 10_000
)

// Config configures a Generator and a Runner. The zero value is a valid
// configuration: every field's comment states its default. Fractions and
// rates whose default is not zero take a negative value to mean "none".
type Config struct {
	// Seed seeds every random choice: the same Config draws the same
	// population and the same sequence of events. Default 0 (a fixed seed,
	// not a random one).
	Seed uint64
	// IDPrefix starts every event and message id, so that runs with
	// different prefixes never share an id. Nudge applies an event id once
	// within its dedupe window (10 minutes by default): a second run with
	// the same Seed and IDPrefix inside that window is dropped as
	// duplicates. Letters, digits and . _ @ : ~ - only, at most 64 bytes.
	// Default "lg<Seed>".
	IDPrefix string
	// Start is the timestamp of the first event; later timestamps follow
	// the run's clock from there. Default the time Run starts (NewGenerator
	// has no clock of its own: Next takes the time).
	Start time.Time

	// Users is the number of users, "u0" (the most active) to "u<Users-1>".
	// Default 10,000.
	Users int
	// Conversations is the number of conversations: direct chats "d<i>"
	// and groups "g<i>"; the lower i, the more active. Default 2,000.
	Conversations int
	// GroupFraction is the share of conversations that are groups; the
	// others are direct chats of two users. Default 0.3.
	GroupFraction float64
	// GroupSizeMin and GroupSizeMax bound the size of ordinary groups,
	// drawn log-uniformly (small groups are common). Defaults 3 and 50; at
	// most MaxGroupSize. A group never has more members than its app has
	// users.
	GroupSizeMin, GroupSizeMax int
	// LargeGroupFraction is the share of groups of LargeGroupSize members.
	// Default 0.01.
	LargeGroupFraction float64
	// LargeGroupSize is the size of large groups. Default 500; at most
	// MaxGroupSize.
	LargeGroupSize int
	// ZipfS is the skew (Zipf exponent s > 1) of user and conversation
	// activity: who joins conversations, which conversations are busy, who
	// sends and who is online. Default 1.1.
	ZipfS float64

	// MentionRate is the share of group messages that mention one to three
	// members. Direct messages mention nobody. Default 0.1.
	MentionRate float64
	// ReadProbability is the chance that a recipient without a read already
	// pending reads the conversation after a delay; the others leave it
	// unread (until a later message). Default 0.8.
	ReadProbability float64
	// ReadDelay is the median delay of a read after the message that
	// prompted it. Delays are log-normal around it. Default 30s.
	ReadDelay time.Duration
	// ReadDelayMax caps read delays. Default 30m.
	ReadDelayMax time.Duration
	// ReadDelaySigma is the spread of read delays: the standard deviation
	// of their natural logarithm. Default 1 (half of the reads within about
	// half and twice the median).
	ReadDelaySigma float64
	// PartialReadRate is the share of reads up to the message that prompted
	// them rather than up to the newest message of the conversation.
	// Default 0.1.
	PartialReadRate float64

	// PresenceRate is the share of new events that are presence changes of
	// a device (online, heartbeat, offline). Default 0.2.
	PresenceRate float64
	// DeviceFraction is the share of users with one to three push devices,
	// registered before the traffic starts. Default 0.5.
	DeviceFraction float64
	// APNsFraction is the share of devices on APNs; the others are FCM.
	// Default 0.4.
	APNsFraction float64
	// DeviceChurnRate is the share of new events that replace a device's
	// push token (device.removed, then device.registered). Default 0.002.
	DeviceChurnRate float64
	// PrefsFraction is the share of users who set preferences before the
	// traffic starts: time zone, quiet hours, reminder delay, muted or
	// mentions-only conversations. Default 0.1.
	PrefsFraction float64
	// ReminderDelay, if set, is every user's first reminder delay (a
	// prefs.updated reminder_delay_s at setup, whole seconds, at least 1),
	// so that reminders fall due within a short run. Default 0: the
	// users who set preferences draw theirs (PrefsFraction).
	ReminderDelay time.Duration
	// OpenRate is the share of the pushes handed to Generator.React whose
	// user opens them (a notification.opened event, 2 to 30 s later, times
	// TimeScale; a tenth of them reported twice). Default 0.
	OpenRate float64
	// PushReadRate is the share of those pushes after which the user reads
	// the conversation (2 to 30 s later, times TimeScale). Default 0.
	PushReadRate float64
	// Apps are the apps (tenants); users and conversations are spread
	// evenly over them and only meet within their app. Default one app,
	// "default".
	Apps []string

	// DuplicateRate is the share of events published a second time, with
	// the same id, within a second (times TimeScale), as a retrying
	// producer does. Default 0.
	DuplicateRate float64
	// BadRate is the share of entries that are malformed on purpose and
	// published raw: truncated JSON, wrong types, invalid UTF-8, unknown
	// version or type, missing fields, duplicate keys, oversize. For
	// dead-letter tests. Default 0.
	BadRate float64

	// Rate is the pace of the traffic in entries per second; the setup
	// before it is not paced. Entry n of the traffic is stamped Start + n /
	// Rate, so a run that keeps up with its rate draws the same events as
	// any other run of its Config. Default 0: as fast as Redis takes them,
	// stamped with the time since the traffic started, so the reads and
	// duplicates that come due interleave differently from run to run.
	Rate float64
	// Duration ends the traffic after this long (Rate × Duration entries
	// when paced). Default 0: no limit.
	Duration time.Duration
	// Total ends the traffic after this many entries (events, duplicates
	// and bad entries; the setup is not counted). Default 0: no limit.
	// With neither Duration nor Total the run ends with its context.
	Total int64
	// Tail keeps the run going this long after the traffic ends, drawing
	// no new event but publishing what falls due: reads, duplicates and
	// users' reactions to the pushes of the traffic (PushFeed), so that
	// pushes near the end get their opens and reads too. Default 0.
	Tail time.Duration
	// TimeScale multiplies every delay the generator draws (reads,
	// duplicates): 0.01 makes a 30s read delay 300ms, to compress time in
	// fast runs. Default 1.
	TimeScale float64

	// Keyspace of the streams. Default keys.New("", 0).
	Keyspace keys.Keyspace
	// MaxLen is the producer's backstop length of each stream (see
	// producer.Config). Default producer.DefaultMaxLen; -1 disables it.
	MaxLen int64
	// BatchSize is the number of events per pipelined PublishBatch. Default
	// 200; at most MaxBatchSize.
	BatchSize int
	// PublishTimeout bounds each batch, its retries included: a batch
	// Redis does not take (down, restarting, a connection reset) is
	// retried with backoff until then, and the run fails after it. A batch
	// in flight when the run's context ends is finished, so that what was
	// published is known. Default 10s.
	PublishTimeout time.Duration

	// Record, if set, receives every valid event published (setup, events
	// and duplicates), one JSON object per line in publish order, exactly as
	// published: a file cmd/publish can replay and from which tests
	// recompute expected totals. Bad entries are not recorded (Stats counts
	// them by reason). Written after each batch is published.
	Record io.Writer
	// RecordIDs, if set, receives the stream entry id of each valid event
	// published, one per line, in the order of Record (which may be nil):
	// where the event is in its stream and, in the id's milliseconds, when
	// Redis took it. The chaos run dates unread episodes with them.
	RecordIDs io.Writer
	// Progress, if set, is called with the running totals every
	// ProgressInterval, from a goroutine of its own; it should return
	// quickly.
	Progress func(Stats)
	// ProgressInterval is the period of Progress. Default 1s.
	ProgressInterval time.Duration
	// PushFeed, if set, is the control URL of the push sandbox the worker
	// pushes to (".../sandbox"): the run follows its deliveries and lets
	// users react to the pushes of their devices (OpenRate, PushReadRate),
	// as people do. Default none.
	PushFeed string
}

// withDefaults returns c with defaults filled in, or an error wrapping
// ErrConfig.
func (c Config) withDefaults() (Config, error) {
	if c.IDPrefix == "" {
		c.IDPrefix = fmt.Sprintf("lg%d", c.Seed)
	}
	defInt(&c.Users, DefaultUsers)
	defInt(&c.Conversations, DefaultConversations)
	defFrac(&c.GroupFraction, DefaultGroupFraction)
	defInt(&c.GroupSizeMin, DefaultGroupSizeMin)
	defInt(&c.GroupSizeMax, DefaultGroupSizeMax)
	defFrac(&c.LargeGroupFraction, DefaultLargeGroupFraction)
	defInt(&c.LargeGroupSize, DefaultLargeGroupSize)
	c.ZipfS = cmp.Or(c.ZipfS, DefaultZipfS)
	defFrac(&c.MentionRate, DefaultMentionRate)
	defFrac(&c.ReadProbability, DefaultReadProbability)
	defDur(&c.ReadDelay, DefaultReadDelay)
	defDur(&c.ReadDelayMax, DefaultReadDelayMax)
	c.ReadDelaySigma = cmp.Or(c.ReadDelaySigma, DefaultReadDelaySigma)
	defFrac(&c.PartialReadRate, DefaultPartialReadRate)
	defFrac(&c.PresenceRate, DefaultPresenceRate)
	defFrac(&c.DeviceFraction, DefaultDeviceFraction)
	defFrac(&c.APNsFraction, DefaultAPNsFraction)
	defFrac(&c.DeviceChurnRate, DefaultDeviceChurnRate)
	defFrac(&c.PrefsFraction, DefaultPrefsFraction)
	defFrac(&c.DuplicateRate, 0)
	defFrac(&c.BadRate, 0)
	if len(c.Apps) == 0 {
		c.Apps = []string{event.DefaultApp}
	}
	c.TimeScale = cmp.Or(c.TimeScale, DefaultTimeScale)
	c.Keyspace = keys.New(c.Keyspace.Prefix, c.Keyspace.Shards)
	defInt(&c.BatchSize, DefaultBatchSize)
	defDur(&c.PublishTimeout, DefaultPublishTimeout)
	defDur(&c.ProgressInterval, DefaultProgressInterval)
	return c, c.validate()
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	probe := event.Event{V: event.Version, Type: event.TypePresence, ID: c.IDPrefix + "-e0", TS: 1767225600000, User: "u", Status: event.StatusOnline}
	if len(c.IDPrefix) > 64 || event.Validate(&probe) != nil {
		bad("IDPrefix %q: want at most 64 letters, digits or . _ @ : ~ -", c.IDPrefix)
	}
	seen := map[string]bool{}
	for _, app := range c.Apps {
		probe.App = app
		if app == "" || event.Validate(&probe) != nil {
			bad("app %q: want 1 to 64 letters, digits or . _ -", app)
		}
		if seen[app] {
			bad("app %q listed twice", app)
		}
		seen[app] = true
	}
	if c.Users < 2*len(c.Apps) {
		bad("Users %d: want at least two per app (%d apps)", c.Users, len(c.Apps))
	}
	if c.Conversations < 1 {
		bad("Conversations %d: want at least 1", c.Conversations)
	}
	if c.GroupSizeMin < 2 || c.GroupSizeMax < c.GroupSizeMin || c.GroupSizeMax > MaxGroupSize {
		bad("group sizes %d..%d: want 2 <= min <= max <= %d", c.GroupSizeMin, c.GroupSizeMax, MaxGroupSize)
	}
	if c.LargeGroupSize < 2 || c.LargeGroupSize > MaxGroupSize {
		bad("LargeGroupSize %d: want 2 to %d", c.LargeGroupSize, MaxGroupSize)
	}
	if !(c.ZipfS > 1) || math.IsInf(c.ZipfS, 0) {
		bad("ZipfS %v: want a finite number above 1", c.ZipfS)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"GroupFraction", c.GroupFraction}, {"LargeGroupFraction", c.LargeGroupFraction},
		{"MentionRate", c.MentionRate}, {"ReadProbability", c.ReadProbability},
		{"PartialReadRate", c.PartialReadRate}, {"PresenceRate", c.PresenceRate},
		{"DeviceFraction", c.DeviceFraction}, {"APNsFraction", c.APNsFraction},
		{"DeviceChurnRate", c.DeviceChurnRate}, {"PrefsFraction", c.PrefsFraction},
		{"DuplicateRate", c.DuplicateRate}, {"BadRate", c.BadRate},
		{"OpenRate", c.OpenRate}, {"PushReadRate", c.PushReadRate},
	} {
		if !(f.v <= 1) { // negative values mean none and were set to 0; NaN fails here
			bad("%s %v: want a share from 0 to 1", f.name, f.v)
		}
	}
	if c.PresenceRate+c.DeviceChurnRate > 1 {
		bad("PresenceRate + DeviceChurnRate = %v: want at most 1", c.PresenceRate+c.DeviceChurnRate)
	}
	if c.ReadDelay < 0 || c.ReadDelayMax < c.ReadDelay {
		bad("read delay %v capped at %v: want 0 <= median <= cap", c.ReadDelay, c.ReadDelayMax)
	}
	if !(c.ReadDelaySigma > 0) || math.IsInf(c.ReadDelaySigma, 0) {
		bad("ReadDelaySigma %v: want a finite number above 0", c.ReadDelaySigma)
	}
	if !(c.Rate >= 0) || math.IsInf(c.Rate, 0) {
		bad("Rate %v: want 0 (unpaced) or a finite number of entries per second", c.Rate)
	}
	if c.ReminderDelay < 0 || c.ReminderDelay > 7*24*time.Hour {
		bad("ReminderDelay %v: want 0 to 168h", c.ReminderDelay)
	}
	if c.Tail < 0 {
		bad("Tail %v: want 0 or more", c.Tail)
	}
	if c.Duration < 0 || c.Total < 0 {
		bad("Duration %v and Total %d: want 0 (no limit) or more", c.Duration, c.Total)
	}
	if !(c.TimeScale > 0) || math.IsInf(c.TimeScale, 0) {
		bad("TimeScale %v: want a finite number above 0", c.TimeScale)
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatchSize {
		bad("BatchSize %d: want 1 to %d", c.BatchSize, MaxBatchSize)
	}
	if c.PublishTimeout < 0 || c.ProgressInterval < 0 {
		bad("PublishTimeout %v and ProgressInterval %v: want 0 (default) or more", c.PublishTimeout, c.ProgressInterval)
	}
	if !c.Start.IsZero() && (c.Start.Year() < 2000 || c.Start.Year() > 2099) {
		bad("Start %v: want a time between 2000 and 2100", c.Start)
	}
	return errors.Join(errs...)
}

func defInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

func defDur(v *time.Duration, def time.Duration) {
	if *v == 0 {
		*v = def
	}
}

// defFrac fills in the default of a share: 0 means def, negative means none.
func defFrac(v *float64, def float64) {
	switch {
	case *v == 0:
		*v = def
	case *v < 0:
		*v = 0
	}
}
