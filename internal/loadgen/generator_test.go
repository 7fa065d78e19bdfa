package loadgen_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/loadgen"
)

var t0 = time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)

// draw returns n items of a generator whose clock starts at t0 and moves
// on by step per item.
func draw(tb testing.TB, cfg loadgen.Config, n int, step time.Duration) []loadgen.Item {
	tb.Helper()
	g, err := loadgen.NewGenerator(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	items := make([]loadgen.Item, n)
	now := t0
	for i := range items {
		items[i] = g.Next(now)
		now = now.Add(step)
	}
	return items
}

// encode returns an item as its stream entry's payload.
func encode(tb testing.TB, it loadgen.Item) []byte {
	tb.Helper()
	if it.Kind == loadgen.KindBad {
		return it.Raw
	}
	b, err := json.Marshal(it.Event)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// small is a population small enough for tests to see every kind of event
// many times, with time compressed so that reads follow within a second.
func small() loadgen.Config {
	return loadgen.Config{
		Seed: 7, Users: 500, Conversations: 120, LargeGroupFraction: 0.05, LargeGroupSize: 120,
		Apps: []string{"chat", "team"}, TimeScale: 0.01, DuplicateRate: 0.02, BadRate: 0.02,
		DeviceChurnRate: 0.01,
	}
}

func TestGeneratorIsDeterministic(t *testing.T) {
	t.Parallel()
	a := draw(t, small(), 20_000, time.Millisecond)
	b := draw(t, small(), 20_000, time.Millisecond)
	for i := range a {
		if a[i].Kind != b[i].Kind || !bytes.Equal(encode(t, a[i]), encode(t, b[i])) {
			t.Fatalf("item %d differs:\n%s %s\n%s %s", i, a[i].Kind, encode(t, a[i]), b[i].Kind, encode(t, b[i]))
		}
	}
	other := small()
	other.Seed++
	c := draw(t, other, 1_000, time.Millisecond)
	same := 0
	for i := range c {
		if bytes.Equal(encode(t, a[i]), encode(t, c[i])) {
			same++
		}
	}
	if same > 10 {
		t.Errorf("another seed drew %d of 1000 identical items", same)
	}
}

// TestGeneratorTraffic checks the invariants a consumer and an oracle rely
// on, over one long trace.
func TestGeneratorTraffic(t *testing.T) {
	t.Parallel()
	cfg := small()
	items := draw(t, cfg, 40_000, time.Millisecond)

	type sent struct {
		at         int
		conv       string
		ts         int64
		recipients []string
	}
	var (
		kinds    = map[loadgen.Kind]int{}
		types    = map[string]int{}
		byID     = map[string]*event.Event{} // originals
		messages = map[string]sent{}
		newest   = map[string]string{} // conversation -> newest message
		members  = map[string][]string{}
		convApp  = map[string]string{}
		tokens   = map[string]map[string]bool{} // user -> registered tokens
		online   = map[string]bool{}            // user|device
		setupEnd = 0
		reads    = 0
		newestRd = 0
	)
	for i, it := range items {
		kinds[it.Kind]++
		if it.Kind == loadgen.KindSetup {
			if setupEnd != i {
				t.Fatalf("setup item %d after the traffic started at %d", i, setupEnd)
			}
			setupEnd = i + 1
		}
		if it.Kind == loadgen.KindBad {
			continue
		}
		e := it.Event
		if it.Kind == loadgen.KindDuplicate {
			if orig := byID[e.ID]; orig == nil || !bytes.Equal(encode(t, loadgen.Item{Event: orig}), encode(t, it)) {
				t.Fatalf("duplicate %d (%s) does not repeat an earlier event", i, e.ID)
			}
			continue
		}
		if _, err := event.Decode(encode(t, it)); err != nil {
			t.Fatalf("item %d does not pass the contract: %v\n%s", i, err, encode(t, it))
		}
		if byID[e.ID] != nil {
			t.Fatalf("item %d reuses id %s", i, e.ID)
		}
		byID[e.ID] = e
		types[e.Type]++
		if !slices.Contains(cfg.Apps, e.App) {
			t.Fatalf("item %d: app %q", i, e.App)
		}
		switch e.Type {
		case event.TypeMessage:
			if slices.Contains(e.Recipients, e.Sender) {
				t.Fatalf("message %s: the sender %s is a recipient", e.Message, e.Sender)
			}
			for _, m := range e.Mentions {
				if !slices.Contains(e.Recipients, m) {
					t.Fatalf("message %s mentions %s, who is not a recipient", e.Message, m)
				}
			}
			all := slices.Sorted(slices.Values(append([]string{e.Sender}, e.Recipients...)))
			if prev, ok := members[e.Conversation]; !ok {
				members[e.Conversation], convApp[e.Conversation] = all, e.App
			} else if !slices.Equal(prev, all) || convApp[e.Conversation] != e.App {
				t.Fatalf("message %s: members of %s changed from %v to %v", e.Message, e.Conversation, prev, all)
			}
			if strings.HasPrefix(e.Conversation, "d") && len(all) != 2 {
				t.Fatalf("direct chat %s has %d members", e.Conversation, len(all))
			}
			if _, dup := messages[e.Message]; dup {
				t.Fatalf("message id %s sent twice", e.Message)
			}
			messages[e.Message] = sent{at: i, conv: e.Conversation, ts: e.TS, recipients: e.Recipients}
			newest[e.Conversation] = e.Message
		case event.TypeRead:
			reads++
			m, ok := messages[e.UpTo]
			switch {
			case !ok:
				t.Fatalf("read %d: %s reads %s up to %q, never sent", i, e.User, e.Conversation, e.UpTo)
			case m.conv != e.Conversation:
				t.Fatalf("read %d: up to %s of %s, in %s", i, e.UpTo, m.conv, e.Conversation)
			case m.ts > e.TS || m.at > i:
				t.Fatalf("read %d comes before the message %s it reads", i, e.UpTo)
			case !slices.Contains(m.recipients, e.User):
				t.Fatalf("read %d: %s did not receive %s", i, e.User, e.UpTo)
			}
			if newest[e.Conversation] == e.UpTo {
				newestRd++
			}
		case event.TypePresence:
			k := e.User + "|" + e.Device
			switch e.Status {
			case event.StatusOnline:
				if online[k] {
					t.Fatalf("item %d: %s online twice", i, k)
				}
				online[k] = true
			default:
				if !online[k] {
					t.Fatalf("item %d: %s %s while offline", i, k, e.Status)
				}
				online[k] = e.Status == event.StatusHeartbeat
			}
		case event.TypeDeviceRegistered:
			if tokens[e.User] == nil {
				tokens[e.User] = map[string]bool{}
			}
			tokens[e.User][e.Token] = true
		case event.TypeDeviceRemoved:
			if !tokens[e.User][e.Token] {
				t.Fatalf("item %d removes a token %s never registered", i, e.User)
			}
			delete(tokens[e.User], e.Token)
		case event.TypePrefs:
			if it.Kind != loadgen.KindSetup {
				t.Fatalf("item %d: preferences after the setup", i)
			}
		}
	}

	t.Logf("kinds %v types %v, %d of %d reads up to the newest message", kinds, types, newestRd, reads)
	for _, typ := range []string{event.TypeMessage, event.TypeRead, event.TypePresence,
		event.TypeDeviceRegistered, event.TypeDeviceRemoved, event.TypePrefs} {
		if types[typ] == 0 {
			t.Errorf("no %s events", typ)
		}
	}
	if setupEnd == 0 || kinds[loadgen.KindDuplicate] == 0 || kinds[loadgen.KindBad] == 0 {
		t.Errorf("kinds %v: want setup, duplicates and bad entries", kinds)
	}
	// Shares: 2% duplicates and 2% bad entries of the traffic.
	traffic := float64(len(items) - setupEnd)
	for _, k := range []loadgen.Kind{loadgen.KindDuplicate, loadgen.KindBad} {
		if share := float64(kinds[k]) / traffic; math.Abs(share-0.02) > 0.005 {
			t.Errorf("%s share %.4f, want 0.02", k, share)
		}
	}
	if float64(newestRd) < 0.7*float64(reads) {
		t.Errorf("%d of %d reads up to the newest message, want most", newestRd, reads)
	}
	groups, large := 0, 0
	for c, m := range members {
		if strings.HasPrefix(c, "g") {
			groups++
			if len(m) < 3 {
				t.Errorf("group %s has %d members", c, len(m))
			}
			if len(m) == 120 {
				large++
			}
		}
	}
	if groups == 0 || large == 0 {
		t.Errorf("%d active groups, %d large: want both", groups, large)
	}
}

func TestZipfSkew(t *testing.T) {
	t.Parallel()
	cfg := loadgen.Config{Seed: 3, Users: 2_000, Conversations: 500}
	sent := map[string]int{}
	for _, it := range draw(t, cfg, 60_000, time.Millisecond) {
		if it.Kind == loadgen.KindEvent && it.Event.Type == event.TypeMessage {
			sent[it.Event.Sender]++
		}
	}
	counts := make([]int, cfg.Users) // users who sent nothing count as 0
	i := 0
	for _, n := range sent {
		counts[i] = n
		i++
	}
	sort.Sort(sort.Reverse(sort.IntSlice(counts)))
	top := 0
	for _, n := range counts[:10] {
		top += n
	}
	median := counts[len(counts)/2]
	t.Logf("top 10 senders: %v; median %d; %d of %d users sent", counts[:10], median, len(sent), cfg.Users)
	if top/10 < 20*max(median, 1) {
		t.Errorf("the 10 most active users sent %d messages on average, the median user %d: want a steep skew", top/10, median)
	}
}

func TestBadEntriesGetTheirReason(t *testing.T) {
	t.Parallel()
	cfg := loadgen.Config{Seed: 11, Users: 100, Conversations: 20, BadRate: 1}
	reasons := map[event.Reason]int{}
	for i, it := range draw(t, cfg, 2_000, time.Millisecond) {
		if it.Kind == loadgen.KindSetup {
			continue
		}
		if it.Kind != loadgen.KindBad || it.Event != nil || it.RoutingKey == "" {
			t.Fatalf("item %d: %+v, want a bad entry with a routing key", i, it)
		}
		_, err := event.Decode(it.Raw)
		if got := event.ReasonOf(err); err == nil || got != it.Reason {
			t.Fatalf("bad entry %q: decoder says %v (%v), generator %s", clip(it.Raw), got, err, it.Reason)
		}
		reasons[it.Reason]++
	}
	want := []event.Reason{event.ReasonInvalidJSON, event.ReasonInvalidField, event.ReasonInvalidUTF8,
		event.ReasonVersion, event.ReasonUnknownType, event.ReasonMissingField, event.ReasonDuplicateKey, event.ReasonTooLarge}
	for _, r := range want {
		if reasons[r] < 100 {
			t.Errorf("%d entries of reason %s, want about 1/%d of them", reasons[r], r, len(want))
		}
	}
}

func clip(b []byte) []byte { return b[:min(len(b), 200)] }

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	if _, err := loadgen.NewGenerator(loadgen.Config{}); err != nil {
		t.Fatalf("the zero Config: %v", err)
	}
	for _, tc := range []struct {
		name string
		cfg  loadgen.Config
		want string
	}{
		{"zipf", loadgen.Config{ZipfS: 1}, "ZipfS"},
		{"share", loadgen.Config{MentionRate: 1.5}, "MentionRate"},
		{"nan", loadgen.Config{BadRate: math.NaN()}, "BadRate"},
		{"groups", loadgen.Config{GroupSizeMin: 10, GroupSizeMax: 5}, "group sizes"},
		{"large", loadgen.Config{LargeGroupSize: loadgen.MaxGroupSize + 1}, "LargeGroupSize"},
		{"users", loadgen.Config{Users: 3, Apps: []string{"a", "b"}}, "Users"},
		{"app", loadgen.Config{Apps: []string{"a b"}}, "app"},
		{"app twice", loadgen.Config{Apps: []string{"a", "a"}}, "twice"},
		{"id prefix", loadgen.Config{IDPrefix: "run|1"}, "IDPrefix"},
		{"rate", loadgen.Config{Rate: -1}, "Rate"},
		{"total", loadgen.Config{Total: -1}, "Total"},
		{"batch", loadgen.Config{BatchSize: loadgen.MaxBatchSize + 1}, "BatchSize"},
		{"read delay", loadgen.Config{ReadDelay: time.Hour, ReadDelayMax: time.Minute}, "read delay"},
		{"presence", loadgen.Config{PresenceRate: 0.9, DeviceChurnRate: 0.2}, "PresenceRate"},
		{"start", loadgen.Config{Start: time.Unix(1, 0)}, "Start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadgen.NewGenerator(tc.cfg)
			if !errors.Is(err, loadgen.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrConfig naming %s", err, tc.want)
			}
		})
	}
}

// A negative share means none: no groups, no devices, no preferences, no
// presence.
func TestNegativeShareMeansNone(t *testing.T) {
	t.Parallel()
	cfg := loadgen.Config{Users: 50, Conversations: 10, GroupFraction: -1, DeviceFraction: -1,
		PrefsFraction: -1, PresenceRate: -1, ReadProbability: -1}
	for i, it := range draw(t, cfg, 2_000, time.Millisecond) {
		if it.Kind != loadgen.KindEvent || it.Event.Type != event.TypeMessage || len(it.Event.Recipients) != 1 || len(it.Event.Mentions) != 0 {
			t.Fatalf("item %d: %s %s, want direct messages only", i, it.Kind, encode(t, it))
		}
	}
}

// BenchmarkGenerate measures the generator alone, with the default
// population, at 10,000 events per second of its clock.
func BenchmarkGenerate(b *testing.B) {
	g, err := loadgen.NewGenerator(loadgen.Config{DuplicateRate: 0.01, BadRate: 0.001})
	if err != nil {
		b.Fatal(err)
	}
	now := t0
	for g.SetupRemaining() > 0 {
		g.Next(now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		g.Next(now)
		now = now.Add(100 * time.Microsecond)
	}
}

// Users react to the pushes of their devices: they open them (a valid
// notification.opened with the push's episode and stage, sometimes
// reported twice) and read the conversation, a few seconds later; a push
// to a token the generator does not know is dropped and counted.
func TestReactionsToPushes(t *testing.T) {
	t.Parallel()
	cfg := small()
	cfg.OpenRate, cfg.PushReadRate, cfg.ReadProbability, cfg.BadRate, cfg.DuplicateRate = 1, 1, -1, -1, -1
	g, err := loadgen.NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The setup registers the devices: take the first one's token and user.
	var reg *event.Event
	now := t0
	for g.SetupRemaining() > 0 {
		it := g.Next(now)
		if reg == nil && it.Event.Type == event.TypeDeviceRegistered {
			reg = it.Event
		}
	}
	// A conversation of that user: from a message of the traffic.
	var conv string
	for i := 0; conv == "" && i < 100000; i++ {
		it := g.Next(now)
		if e := it.Event; e != nil && e.Type == event.TypeMessage && e.App == reg.App && slices.Contains(e.Recipients, reg.User) {
			conv = e.Conversation
		}
	}
	if conv == "" {
		t.Fatal("no message to the device's user")
	}
	g.React(loadgen.Push{Token: reg.Token, Platform: reg.Platform, Episode: "1767225600000-7", Stage: 2, Conversation: conv})
	g.React(loadgen.Push{Token: "nobody's", Platform: "fcm", Episode: "1-0", Stage: 1, Conversation: conv})
	var opens, reads int
	for range 20000 {
		now = now.Add(time.Millisecond)
		e := g.Next(now).Event
		if e == nil {
			continue
		}
		switch {
		case e.Type == event.TypeOpened:
			if e.User != reg.User || e.App != reg.App || e.Episode != "1767225600000-7" || e.Stage != 2 || e.Platform != reg.Platform || e.Conversation != conv {
				t.Fatalf("opened %+v", e)
			}
			if _, err := event.Decode(encode(t, loadgen.Item{Kind: loadgen.KindEvent, Event: e})); err != nil {
				t.Fatalf("opened event invalid: %v", err)
			}
			opens++
		case e.Type == event.TypeRead && e.User == reg.User && e.Conversation == conv:
			reads++
		}
	}
	if opens < 1 || opens > 2 || reads != 1 {
		t.Errorf("%d opens and %d reads after one push, want 1 or 2 opens (a second report) and one read", opens, reads)
	}
	if reacted, dropped := g.Reactions(); reacted != 1 || dropped != 1 {
		t.Errorf("reacted %d, dropped %d; want 1 and 1", reacted, dropped)
	}
}

// ReminderDelay gives every user a first reminder delay at setup, merged
// into the preferences a user draws.
func TestReminderDelayForEveryone(t *testing.T) {
	t.Parallel()
	cfg := small()
	cfg.ReminderDelay = 90 * time.Second
	g, err := loadgen.NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for g.SetupRemaining() > 0 {
		e := g.Next(t0).Event
		if e.Type != event.TypePrefs {
			continue
		}
		if e.ReminderDelayS == nil || *e.ReminderDelayS != 90 {
			t.Fatalf("prefs of %s: reminder delay %v, want 90", e.User, e.ReminderDelayS)
		}
		if users[e.App+"/"+e.User] {
			t.Fatalf("two prefs events for %s", e.User)
		}
		users[e.App+"/"+e.User] = true
	}
	if len(users) != cfg.Users {
		t.Errorf("%d users with a reminder delay, want all %d", len(users), cfg.Users)
	}
	cfg.ReminderDelay = -time.Second
	if _, err := loadgen.NewGenerator(cfg); err == nil {
		t.Error("a negative ReminderDelay was accepted")
	}
}
