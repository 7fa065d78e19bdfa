package ingest_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/poll"
)

func TestMain(m *testing.M) { buildtest.MainVerifyingLeaks(m) }

func TestUnreadStateAndCounters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)

	b.publish(t,
		msg("c1", "m1", "alice", "bob", "carol"),
		msg("c1", "m2", "alice", "bob", "carol"),
		msg("c2", "m3", "dave", "bob"),
		read("c1", "carol", ""),
	)
	poll.Until(t, 10*time.Second, "4 events applied", func() bool { return b.metric(t, "events_applied") == 4 })

	if n, ep := b.unread(t, "bob", "c1"); n != 2 || ep == "" {
		t.Errorf("bob in c1: %d unread, episode %q; want 2 and an episode", n, ep)
	}
	if n, _ := b.unread(t, "carol", "c1"); n != 0 {
		t.Errorf("carol read c1 but has %d unread", n)
	}
	if got := b.badge(t, "bob"); got != 3 {
		t.Errorf("bob's badge = %d, want 3", got)
	}
	if got := b.badge(t, "carol"); got != 0 {
		t.Errorf("carol's badge = %d, want 0", got)
	}
	want := map[string]int64{"messages_sent": 3, "recipients": 5, "reads": 1, "episodes_opened": 3, "episodes_closed": 1}
	for m, n := range want {
		if got := b.metric(t, m); got != n {
			t.Errorf("%s = %d, want %d", m, got, n)
		}
	}

	// Writing to a conversation reads it; the episode id is the opening entry.
	_, ep1 := b.unread(t, "bob", "c1")
	b.publish(t, msg("c1", "m4", "bob", "alice"))
	poll.Until(t, 10*time.Second, "bob's reply", func() bool { n, _ := b.unread(t, "bob", "c1"); return n == 0 })
	b.publish(t, msg("c1", "m5", "alice", "bob"))
	poll.Until(t, 10*time.Second, "a new episode", func() bool { n, _ := b.unread(t, "bob", "c1"); return n == 1 })
	if _, ep2 := b.unread(t, "bob", "c1"); ep2 == ep1 || ep2 == "" {
		t.Errorf("new episode id %q, old %q: want a new one", ep2, ep1)
	}
}

func TestReadUpTo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)
	b.publish(t,
		msg("c1", "m1", "alice", "bob"),
		msg("c1", "m2", "alice", "bob"),
		msg("c1", "m3", "alice", "bob"),
		read("c1", "bob", "m1"), // m2 and m3 stay unread
	)
	poll.Until(t, 10*time.Second, "applied", func() bool { return b.metric(t, "reads") == 1 })
	if n, _ := b.unread(t, "bob", "c1"); n != 2 {
		t.Errorf("after reading up to m1: %d unread, want 2", n)
	}
	if got := b.badge(t, "bob"); got != 2 {
		t.Errorf("badge %d, want 2", got)
	}
	b.publish(t, read("c1", "bob", "m3"))
	poll.Until(t, 10*time.Second, "read to the end", func() bool { n, _ := b.unread(t, "bob", "c1"); return n == 0 })
	if got := b.badge(t, "bob"); got != 0 {
		t.Errorf("badge %d, want 0", got)
	}
}

func TestPresence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)
	b.publish(t, presence("bob", "online", "phone"), presence("bob", "online", "laptop"), presence("bob", "offline", "phone"))
	poll.Until(t, 10*time.Second, "presence applied", func() bool { return b.metric(t, "presence_events") == 3 })
	ctx := context.Background()
	key := b.ks.Presence(b.ks.Shard("bob"), "bob")
	devs, err := b.rdb.ZRange(ctx, key, 0, -1).Result()
	if err != nil || !slices.Equal(devs, []string{"laptop"}) {
		t.Errorf("online devices %v (%v), want [laptop]", devs, err)
	}
	if ttl := b.rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 2*time.Minute {
		t.Errorf("presence TTL %s", ttl)
	}
	b.publish(t, presence("bob", "offline", "laptop"))
	poll.Until(t, 10*time.Second, "offline everywhere", func() bool { return b.rdb.Exists(ctx, key).Val() == 0 })
}

func TestDuplicateProducerIDsAppliedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)
	m := msg("c1", "m1", "alice", "bob")
	b.publish(t, m, m, m)
	r := read("c1", "bob", "")
	b.publish(t, r)
	b.publish(t, r)
	poll.Until(t, 10*time.Second, "all entries consumed", func() bool { return b.metric(t, "duplicates") == 3 })
	if got := b.metric(t, "messages_sent"); got != 1 {
		t.Errorf("messages_sent %d, want 1", got)
	}
	if got := b.metric(t, "reads"); got != 1 {
		t.Errorf("reads %d, want 1", got)
	}
}

// A consumer that read entries and died before applying them: its shard
// and pending entries are taken over once idle, applied once, in order.
func TestClaimFromDeadConsumer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	dead, err := ingest.New(b.rdb, b.cfg) // only to create the group
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	conv := "c1"
	s := b.ks.Shard(conv)
	b.publish(t, msg(conv, "m1", "alice", "bob"), msg(conv, "m2", "alice", "bob"), read(conv, "bob", "m1"))
	// "ghost" holds the lease and reads the entries, then dies.
	b.rdb.Set(ctx, b.ks.Lease(s), "ghost", b.cfg.ClaimIdle)
	res, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "nudge-ingest", Consumer: "ghost", Streams: []string{b.ks.Stream(s), ">"}, Count: 2}).Result()
	if err != nil || len(res[0].Messages) != 2 {
		t.Fatalf("ghost read: %v %v", res, err)
	}
	start := time.Now()
	cfg := b.cfg
	cfg.Consumer = "live"
	c := b.start(t, cfg)
	poll.Until(t, 15*time.Second, "all applied", func() bool { return b.metric(t, "events_applied") == 3 })
	if waited := time.Since(start); waited < b.cfg.ClaimIdle/2 {
		t.Errorf("took over after %s, before the claim idle time %s", waited, b.cfg.ClaimIdle)
	}
	if c.Stats().Claimed.Load() != 2 {
		t.Errorf("claimed %d entries, want 2", c.Stats().Claimed.Load())
	}
	// In order: m1, m2, then the read up to m1 leaves m2 unread.
	if n, _ := b.unread(t, "bob", conv); n != 1 {
		t.Errorf("bob has %d unread, want 1 (m2)", n)
	}
}

// A consumer whose lease was taken cannot apply anything any more.
func TestLeaseFencing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := b.cfg
	cfg.Keyspace.Shards = 1
	b.ks = cfg.Keyspace
	c := b.start(t, cfg)
	poll.Until(t, 10*time.Second, "lease", func() bool { return len(c.Owned()) == 1 })
	ctx := context.Background()
	b.rdb.Set(ctx, b.ks.Lease(0), "usurper", time.Minute)
	b.publish(t, msg("c1", "m1", "alice", "bob"))
	poll.Until(t, 10*time.Second, "the lease loss noticed", func() bool { return c.Stats().Errors.Load() > 0 || len(c.Owned()) == 0 })
	if got := b.metric(t, "events_applied"); got != 0 {
		t.Errorf("a consumer without the lease applied %d events", got)
	}
}

// Two consumers split the shards; when one leaves, the other takes all.
func TestRebalance(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg1, cfg2 := b.cfg, b.cfg
	cfg1.Consumer, cfg2.Consumer = "a", "b"
	c1 := b.start(t, cfg1)
	poll.Until(t, 10*time.Second, "a holds all", func() bool { return len(c1.Owned()) == 4 })

	c2, err := ingest.New(b.rdb, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c2.Run(ctx) }()
	poll.Until(t, 15*time.Second, "an even split", func() bool { return len(c1.Owned()) == 2 && len(c2.Owned()) == 2 })

	// Events keep being applied exactly once through the hand-over.
	var evs []*event.Event
	for i := 0; i < 200; i++ {
		evs = append(evs, msg("conv"+string(rune('a'+i%20)), "m"+string(rune('a'+i%26))+string(rune('0'+i/26)), "alice", "bob"))
	}
	b.publish(t, evs...)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 15*time.Second, "a takes the shards back", func() bool { return len(c1.Owned()) == 4 })
	poll.Until(t, 15*time.Second, "all applied", func() bool { return b.metric(t, "messages_sent") == 200 })
	if p := b.pendingTotal(t, "nudge-ingest"); p != 0 {
		t.Errorf("%d pending", p)
	}
}

// Processed entries are trimmed from the streams.
func TestTrim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)
	var evs []*event.Event
	for i := 0; i < 500; i++ {
		evs = append(evs, presence("u"+string(rune('a'+i%26)), "heartbeat", "d"))
	}
	b.publish(t, evs...)
	poll.Until(t, 10*time.Second, "applied", func() bool { return b.metric(t, "presence_events") == 500 })
	poll.Until(t, 10*time.Second, "streams trimmed", func() bool {
		var n int64
		for s := 0; s < b.ks.Shards; s++ {
			n += b.rdb.XLen(context.Background(), b.ks.Stream(s)).Val()
		}
		return n == 0
	})
}

type recordingHooks struct {
	mu      sync.Mutex
	opened  []ingest.Episode
	closed  []ingest.Episode
	counted int64
	fail    int // fail this many EpisodesOpened calls
}

func (h *recordingHooks) EpisodesOpened(_ context.Context, eps []ingest.Episode) (ingest.Counts, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail > 0 {
		h.fail--
		return nil, errors.New("scheduler down")
	}
	h.opened = append(h.opened, eps...)
	return ingest.Counts{{Metric: "reminders_scheduled", App: "default"}: int64(len(eps))}, nil
}

func (h *recordingHooks) EpisodesClosed(_ context.Context, eps []ingest.Episode) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = append(h.closed, eps...)
	return nil
}

func (h *recordingHooks) Counted(c ingest.Counts) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range c {
		h.counted += n
	}
}

func (h *recordingHooks) snapshot() (opened, closed []ingest.Episode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.opened), slices.Clone(h.closed)
}

func (h *recordingHooks) failing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fail > 0
}

// Episodes reach the hooks after their batch was applied, through the
// shard's outbox: a failing hook holds back neither the batch nor the
// shard, and is retried until it takes every episode, whose counts are
// recorded once.
func TestHooks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := &recordingHooks{fail: 1 << 30}
	cfg := b.cfg
	cfg.Hooks = h
	b.start(t, cfg)
	b.publish(t, msg("c1", "m1", "alice", "bob", "carol"), msg("c1", "m2", "alice", "bob"))
	poll.Until(t, 10*time.Second, "applied while the hook fails", func() bool { return b.metric(t, "messages_sent") == 2 })
	if opened, _ := h.snapshot(); len(opened) != 0 || !h.failing() {
		t.Fatalf("opened %+v while the hook fails", opened)
	}
	h.mu.Lock()
	h.fail = 0
	h.mu.Unlock()
	poll.Until(t, 10*time.Second, "the episodes handed over", func() bool { o, _ := h.snapshot(); return len(o) >= 2 })
	opened, _ := h.snapshot()
	if len(opened) != 2 {
		t.Fatalf("opened %+v, want bob's and carol's", opened)
	}
	for _, ep := range opened {
		n, id := b.unread(t, ep.User, "c1")
		if n == 0 || id != ep.ID || ep.AppliedAt.IsZero() || ep.OpenedAt.IsZero() {
			t.Errorf("hook episode %+v, state n=%d id=%s", ep, n, id)
		}
	}
	poll.Until(t, 10*time.Second, "the counts recorded", func() bool { return b.metric(t, "reminders_scheduled") == 2 })
	b.publish(t, read("c1", "bob", ""))
	poll.Until(t, 10*time.Second, "closed", func() bool { _, c := h.snapshot(); return len(c) == 1 })
	_, closed := h.snapshot()
	if closed[0].User != "bob" || closed[0].ID != opened[0].ID && closed[0].ID != opened[1].ID {
		t.Errorf("closed %+v", closed)
	}
	if n := b.metric(t, "reminders_scheduled"); n != 2 {
		t.Errorf("reminders_scheduled = %d, want 2", n)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counted != 2 {
		t.Errorf("Counted told of %d, want 2", h.counted)
	}
	for s := 0; s < b.ks.Shards; s++ {
		if n := b.rdb.XLen(context.Background(), b.ks.Outbox(s)).Val(); n != 0 {
			t.Errorf("outbox of shard %d holds %d entries", s, n)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, cfg := range []ingest.Config{
		{Consumer: "x", BatchSize: -1},
		{Consumer: "x", ClaimIdle: time.Millisecond},
		{Consumer: "x", Block: time.Minute},
		{Consumer: "x", MaxDeliveries: -2},
	} {
		if _, err := ingest.New(rdb, cfg); !errors.Is(err, ingest.ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	if _, err := ingest.New(rdb, ingest.Config{Consumer: os.Getenv("NOPE") + "x"}); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}

// An entry whose update Redis rejects (here a key of the wrong type) goes
// to the dead-letter stream; the rest of its batch is applied and the shard
// keeps flowing.
func TestPoisonEntryDoesNotBlockTheShard(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conv := "c-poison"
	s := b.ks.Shard(conv)
	// Someone wrote a string where bob's episode hash belongs.
	b.rdb.Set(ctx, b.ks.Episode(s, "bob", conv), "oops", time.Hour)
	b.publish(t, msg(conv, "m1", "alice", "carol"), msg(conv, "m2", "alice", "bob"), msg(conv, "m3", "alice", "carol"))
	b.start(t, b.cfg)
	poll.Until(t, 15*time.Second, "the poison entry dead-lettered", func() bool { return len(b.deadLetters(t)) == 1 })
	if got := b.deadLetters(t); got[0] != "apply_failed" {
		t.Errorf("reason %v, want apply_failed", got)
	}
	poll.Until(t, 10*time.Second, "the rest applied", func() bool { return b.metric(t, "messages_sent") == 2 })
	if n, _ := b.unread(t, "carol", conv); n != 2 {
		t.Errorf("carol has %d unread, want 2", n)
	}
	b.publish(t, msg(conv, "m4", "alice", "carol"))
	poll.Until(t, 10*time.Second, "later entries", func() bool { return b.metric(t, "messages_sent") == 3 })
}

// An entry delivered more than MaxDeliveries times (a consumer crashed on
// it again and again) goes to the dead-letter stream instead of being
// tried forever.
func TestMaxDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c0, err := ingest.New(b.rdb, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c0.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	conv := "c-crashy"
	s := b.ks.Shard(conv)
	stream := b.ks.Stream(s)
	b.publish(t, msg(conv, "m1", "alice", "bob"))
	res, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "nudge-ingest", Consumer: "crash-1", Streams: []string{stream, ">"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	id := res[0].Messages[0].ID
	for i := 2; i <= 5; i++ { // four more deliveries: five in all
		if err := b.rdb.XClaim(ctx, &redis.XClaimArgs{Stream: stream, Group: "nudge-ingest", Consumer: "crash-" + string(rune('0'+i)), Messages: []string{id}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b.rdb.Set(ctx, b.ks.Lease(s), "crash-5", 10*time.Millisecond) // it died holding the lease
	cfg := b.cfg
	cfg.ClaimIdle = time.Second
	cfg.Block = 50 * time.Millisecond
	b.start(t, cfg) // its claim is the sixth delivery
	poll.Until(t, 15*time.Second, "dead letter", func() bool { return len(b.deadLetters(t)) == 1 })
	if got := b.deadLetters(t); got[0] != "max_deliveries" {
		t.Errorf("reason %v", got)
	}
	if n := b.metric(t, "messages_sent"); n != 0 {
		t.Errorf("messages_sent %d, want 0", n)
	}
}

// The unread count is the badge's field, and an episode lives exactly as
// long as it. An episode gone before its badge field (its TTL ran out while
// the user's other conversations kept the badge hash alive) is opened
// again by the next message: a whole episode with a TTL, a count of one,
// an episode opened counted.
func TestEpisodeGoneBeforeItsBadgeFieldOpensAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.start(t, b.cfg)
	ctx := context.Background()
	b.publish(t, msg("c1", "m1", "alice", "bob"), msg("c1", "m2", "alice", "bob"))
	poll.Until(t, 10*time.Second, "applied", func() bool { return b.metric(t, "messages_sent") == 2 })
	s := b.ks.Shard("c1")
	if err := b.rdb.Del(ctx, b.ks.Episode(s, "bob", "c1")).Err(); err != nil {
		t.Fatal(err)
	}
	b.publish(t, msg("c1", "m3", "alice", "bob"))
	poll.Until(t, 10*time.Second, "applied", func() bool { return b.metric(t, "messages_sent") == 3 })
	n, ep := b.unread(t, "bob", "c1")
	if n != 1 || ep == "" {
		t.Errorf("after the episode was gone: %d unread, episode %q; want 1 and an episode", n, ep)
	}
	h := b.rdb.HGetAll(ctx, b.ks.Episode(s, "bob", "c1")).Val()
	if h["last"] != "m3" || h["since"] == "" || h["app"] == "" {
		t.Errorf("episode %v: want it whole", h)
	}
	if ttl := b.rdb.TTL(ctx, b.ks.Episode(s, "bob", "c1")).Val(); ttl <= 0 {
		t.Errorf("episode TTL %v", ttl)
	}
	if got := b.metric(t, "episodes_opened"); got != 2 {
		t.Errorf("episodes_opened %d, want 2", got)
	}
}
