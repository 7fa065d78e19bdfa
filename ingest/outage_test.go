package ingest_test

import (
	"context"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/netfault"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/registry"
)

// PostgreSQL going away does not stop ingest: unread state and counters
// keep being applied from the stream, device and preference events wait in
// the registry outbox, and every one of them lands, in order, once
// PostgreSQL is back.
func TestRegistryOutageDoesNotStopIngest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, dbURL := pgtest.NewMigrated(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := netfault.New(t, u.Host)
	u.Host = proxy.Addr()
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := registry.New(pool)
	icfg := b.cfg
	icfg.Registry = store
	b.start(t, icfg)

	// PostgreSQL goes away.
	proxy.Cut()

	evs := traffic(7, 1500)
	const users = 40
	ts := int64(1767225600000)
	berlin := "Europe/Berlin"
	var regEvents int
	for i := range users {
		user := "r" + strconv.Itoa(i)
		// Registered, then moved to a newer token: only the second stays.
		evs = append(evs,
			&event.Event{V: 1, Type: event.TypeDeviceRegistered, ID: "dev1-" + user, TS: ts, User: user, Platform: event.PlatformFCM, Token: "old-" + user},
			&event.Event{V: 1, Type: event.TypeDeviceRemoved, ID: "devx-" + user, TS: ts + 1, User: user, Platform: event.PlatformFCM, Token: "old-" + user},
			&event.Event{V: 1, Type: event.TypeDeviceRegistered, ID: "dev2-" + user, TS: ts + 2, User: user, Platform: event.PlatformFCM, Token: "new-" + user},
			&event.Event{V: 1, Type: event.TypePrefs, ID: "prefs-" + user, TS: ts + 3, User: user, TimeZone: &berlin})
		regEvents += 4
	}
	o := oracle.New(128)
	distinct := map[string]bool{}
	for _, e := range evs {
		o.Apply(e)
		distinct[e.ID] = true
	}
	start := time.Now()
	b.publish(t, evs...)
	poll.Until(t, 10*time.Second, "every event applied while PostgreSQL is away", func() bool {
		return b.metric(t, "events_applied") == int64(len(distinct))
	})
	t.Logf("%d events applied %s after they were published, PostgreSQL away", len(distinct), time.Since(start).Round(time.Millisecond))
	for k, want := range o.Unread() {
		if got, _ := b.unread(t, k.User, k.Conversation); got != int64(want) {
			t.Errorf("unread %v = %d, want %d", k, got, want)
		}
	}
	var waiting int64
	for s := 0; s < b.ks.Shards; s++ {
		waiting += b.rdb.XLen(ctx, b.ks.RegistryOutbox(s)).Val()
	}
	if waiting != int64(regEvents) {
		t.Errorf("%d device and preference events wait in the registry outbox, want %d", waiting, regEvents)
	}

	// PostgreSQL is back: every change lands, in order.
	proxy.Restore(t)
	poll.Until(t, 20*time.Second, "the registry written", func() bool {
		var devices, prefs int
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM devices WHERE user_id LIKE 'r%'), (SELECT count(*) FROM user_prefs WHERE user_id LIKE 'r%')`).Scan(&devices, &prefs)
		return err == nil && devices == users && prefs == users
	})
	for i := range users {
		user := "r" + strconv.Itoa(i)
		ds, err := store.Devices(ctx, user)
		if err != nil || len(ds) != 1 || ds[0].Token != "new-"+user {
			t.Fatalf("devices of %s: %+v (%v), want the new token only", user, ds, err)
		}
		p, err := store.Prefs(ctx, user)
		if err != nil || p.TimeZone != "Europe/Berlin" {
			t.Fatalf("prefs of %s: %+v (%v)", user, p, err)
		}
	}
	poll.Until(t, 10*time.Second, "the registry outboxes emptied", func() bool {
		for s := 0; s < b.ks.Shards; s++ {
			if b.rdb.Exists(ctx, b.ks.RegistryOutbox(s)).Val() != 0 {
				return false
			}
		}
		return true
	})
}
