package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/clustertest"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
	"github.com/nudgehq/nudge/push/sandbox"
)

// End to end on a real Redis Cluster of three masters: the ingest, worker
// and flusher binaries run with -redis-cluster against events spread over
// every master. Users who stay unread get exactly one push per device (a
// digest of the conversations they did not read), users who read in time
// get none, and once the minute closes the flusher has moved the exact
// counts of what was published to PostgreSQL.
func TestEndToEndOnRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := clustertest.Start(t)
	rdb := cluster.Client()
	const shards = 8
	prefix := redistest.RandomPrefix()
	ks := keys.New(prefix, shards)
	queue := "cluster-" + prefix

	db, dbURL := pgtest.NewMigrated(t)
	sb, creds := harness.Sandbox(t, sandbox.Config{})

	// The processes, and a poll that stops early when one of them dies.
	var (
		mu     sync.Mutex
		exited []string
	)
	common := []string{"-redis-cluster", strings.Join(cluster.Addrs(), ","), "-metrics-addr", "",
		"-prefix", prefix, "-shards", strconv.Itoa(shards), "-database-url", dbURL, "-log-level", "warn"}
	start := func(name string, args ...string) {
		cmd := exec.Command(buildtest.Command(t, name), append(append([]string{}, common...), args...)...)
		cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			err := cmd.Wait()
			mu.Lock()
			exited = append(exited, fmt.Sprintf("%s exited: %v", filepath.Base(cmd.Path), err))
			mu.Unlock()
			close(done)
		}()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	}
	eventually := func(timeout time.Duration, what string, cond func() error) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			err := cond()
			if err == nil {
				return
			}
			mu.Lock()
			dead := slices.Clone(exited)
			mu.Unlock()
			if len(dead) > 0 {
				t.Fatalf("%s: %v; %s", what, err, strings.Join(dead, "; "))
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s: %v", what, timeout, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	start("../cmd/ingest", "-queue", queue, "-stages", "2s", "-consumer", "cluster-e2e", "-claim-idle", "5s")
	start("../cmd/worker", append([]string{"-queue", queue, "-stages", "2s", "-delayed-check-interval", "200ms"}, sb.WorkerArgs(creds)...)...)
	start("../cmd/flusher", "-interval", "1s", "-grace", "1s")

	// The traffic. Users u0..u7 have push devices: u0 and u1 stay unread,
	// u2 and u3 read half of their conversations in time, u4..u7 read all
	// of them. x0..x19 have no device; a few of them read. Senders s0..s4
	// only write.
	pub := producer.New(rdb, producer.Config{Keyspace: ks})
	orc := oracle.New(128)
	n := 0
	ev := func(e event.Event) *event.Event {
		n++
		e.V, e.ID, e.TS = 1, "cl-"+strconv.Itoa(n), time.Now().UnixMilli()
		return &e
	}
	publish := func(what string, events []*event.Event) {
		t.Helper()
		if _, err := pub.PublishBatch(ctx, events); err != nil {
			t.Fatalf("publish %s: %v", what, err)
		}
		for _, e := range events {
			orc.Apply(e)
		}
	}

	const users, conversations, perConversation = 8, 64, 5
	devices := map[string][]string{} // user -> tokens
	platforms := map[string]string{} // token -> platform
	var registrations []*event.Event
	for i := range users {
		u := "u" + strconv.Itoa(i)
		var ps []string
		switch i % 3 {
		case 0:
			ps = []string{event.PlatformFCM, event.PlatformAPNs}
		case 1:
			ps = []string{event.PlatformFCM}
		default:
			ps = []string{event.PlatformAPNs}
		}
		for _, p := range ps {
			tok := sandbox.NewDeviceToken(p)
			devices[u] = append(devices[u], tok)
			platforms[tok] = p
			registrations = append(registrations, ev(event.Event{Type: event.TypeDeviceRegistered, User: u, Platform: p, Token: tok}))
		}
	}
	publish("devices", registrations)
	eventually(30*time.Second, "ingest stores the devices", func() error {
		var got int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM devices").Scan(&got); err != nil {
			return err
		}
		if got != len(registrations) {
			return fmt.Errorf("%d of %d devices", got, len(registrations))
		}
		return nil
	})

	// Conversation i has sender s<i%5> and recipients u<i%8> and up to two
	// of the x users; each gets perConversation messages.
	rng := rand.New(rand.NewPCG(1, 2))
	members := make([][]string, conversations)
	shardUsed := make([]bool, shards)
	convOf := func(i int) string { return "conv-" + strconv.Itoa(i) }
	for i := range conversations {
		members[i] = []string{"u" + strconv.Itoa(i%users)}
		for range rng.IntN(3) {
			x := "x" + strconv.Itoa(rng.IntN(20))
			if !slices.Contains(members[i], x) {
				members[i] = append(members[i], x)
			}
		}
		shardUsed[ks.Shard(convOf(i))] = true
	}
	if slices.Contains(shardUsed, false) {
		t.Fatalf("the conversations leave a shard empty: %v", shardUsed)
	}
	var messages []*event.Event
	for j := range conversations * perConversation {
		i := j % conversations
		messages = append(messages, ev(event.Event{Type: event.TypeMessage, Conversation: convOf(i),
			Message: "m" + strconv.Itoa(j), Sender: "s" + strconv.Itoa(i%5), Recipients: members[i],
			Preview: "hello " + strconv.Itoa(j)}))
	}
	// Who reads what, right after the messages: long before the 2s delay.
	readsConv := func(u string, i int) bool {
		switch u {
		case "u2", "u3":
			return (i/users)%2 == 0
		case "u4", "u5", "u6", "u7":
			return true
		}
		return strings.HasPrefix(u, "x") && i%3 == 0
	}
	var reads []*event.Event
	wantConvs := map[string][]string{} // unread user -> conversations still unread
	for i := range conversations {
		for _, u := range members[i] {
			if readsConv(u, i) {
				reads = append(reads, ev(event.Event{Type: event.TypeRead, Conversation: convOf(i), User: u}))
			} else if len(devices[u]) > 0 {
				wantConvs[u] = append(wantConvs[u], convOf(i))
			}
		}
		if i%10 == 0 { // a sender reading: counted, changes nothing
			reads = append(reads, ev(event.Event{Type: event.TypeRead, Conversation: convOf(i), User: "s" + strconv.Itoa(i%5)}))
		}
	}
	// Producers retrying: the same events (ids) again.
	var dups []*event.Event
	for j := 0; j < len(messages); j += 16 {
		dups = append(dups, messages[j])
	}
	for j := 0; j < len(reads); j += 20 {
		dups = append(dups, reads[j])
	}
	sent := time.Now()
	publish("messages", messages)
	publish("reads", reads)
	publish("duplicates", dups)
	t.Logf("published %d devices, %d messages in %d conversations, %d reads, %d duplicates",
		len(registrations), len(messages), conversations, len(reads), len(dups))

	// The shards spread over every master: each holds streams, and keys
	// live in the slot of their shard's hash tag.
	mastersOf := map[string][]int{} // master address -> shards
	for s := range shards {
		addr := cluster.MasterOf(t, ks.Stream(s))
		mastersOf[addr] = append(mastersOf[addr], s)
	}
	if len(mastersOf) != clustertest.Masters {
		t.Fatalf("the %d shards live on %d masters, want all %d: %v", shards, len(mastersOf), clustertest.Masters, mastersOf)
	}
	var smu sync.Mutex
	streamsOn := map[string]int{}
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		iter := node.Scan(ctx, 0, prefix+":*:events", 100).Iterator()
		for iter.Next(ctx) {
			smu.Lock()
			streamsOn[node.Options().Addr]++
			smu.Unlock()
		}
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	for addr, ss := range mastersOf {
		if streamsOn[addr] != len(ss) {
			t.Errorf("master %s holds %d streams, want %d (shards %v)", addr, streamsOn[addr], len(ss), ss)
		}
	}

	// Pushes: one per device of each user who stays unread.
	wantPushes := 0
	for u := range wantConvs {
		wantPushes += len(devices[u])
	}
	wctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	if err := sb.WaitFor(wctx, func(d []sandbox.Delivery) bool { return len(d) >= wantPushes }); err != nil {
		t.Fatalf("%d of %d pushes: %v", len(sb.Deliveries()), wantPushes, err)
	}
	// asynq runs on the cluster: let every reminder of the queue run out.
	insp := asynq.NewInspector(asynq.RedisClusterClientOpt{Addrs: cluster.Addrs()})
	defer insp.Close()
	var q *asynq.QueueInfo
	eventually(45*time.Second, "the reminder queue drains", func() error {
		q, err = insp.GetQueueInfo(queue)
		if err != nil {
			return err
		}
		if left := q.Pending + q.Active + q.Scheduled + q.Retry; left > 0 {
			return fmt.Errorf("%d tasks left: %+v", left, *q)
		}
		return nil
	})
	if q.Completed == 0 || q.Archived != 0 {
		t.Errorf("queue %s: %d completed, %d archived; want some completed, none archived", queue, q.Completed, q.Archived)
	}
	for i := range users {
		u := "u" + strconv.Itoa(i)
		want := 0
		if len(wantConvs[u]) > 0 {
			want = 1
		}
		for _, tok := range devices[u] {
			ds := sb.DeliveriesTo(tok)
			if len(ds) != want {
				t.Errorf("%s's %s device got %d pushes, want %d", u, platforms[tok], len(ds), want)
				continue
			}
			if want == 0 {
				continue
			}
			d := ds[0]
			convs := []string{d.CollapseKey}
			if list := d.Data["conversations"]; list != "" {
				convs = strings.Split(list, ",")
			}
			slices.Sort(convs)
			slices.Sort(wantConvs[u])
			if !slices.Equal(convs, wantConvs[u]) {
				t.Errorf("%s's %s push is about %v, want the unread %v", u, platforms[tok], convs, wantConvs[u])
			}
			if d.Time.Before(sent.Add(2 * time.Second)) {
				t.Errorf("%s's push came %s after the messages, before the 2s delay", u, d.Time.Sub(sent))
			}
		}
	}
	if got := len(sb.Deliveries()); got != wantPushes {
		t.Errorf("the sandbox got %d pushes, want %d", got, wantPushes)
	}

	// Counters: once the minutes close, PostgreSQL holds the exact counts.
	want := map[string]int64{}
	for _, m := range []string{"messages_sent", "recipients", "reads", "duplicates", "events_applied", "episodes_opened", "episodes_closed", "device_events"} {
		want[m] = orc.Counts()[m]
	}
	want["reminders_sent"] = int64(len(wantConvs))
	for u := range wantConvs {
		for _, tok := range devices[u] {
			want["push_sent|"+platforms[tok]]++
		}
	}
	t.Logf("want %d pushes and the counts %v", wantPushes, want)
	eventually(100*time.Second, "the flusher writes the counts", func() error {
		rows, err := db.Query(ctx, `SELECT metric, platform, sum(value)::bigint FROM counters_minute GROUP BY metric, platform`)
		if err != nil {
			return err
		}
		got := map[string]int64{}
		for rows.Next() {
			var metric, platform string
			var v int64
			if err := rows.Scan(&metric, &platform, &v); err != nil {
				return err
			}
			if metric == "push_sent" {
				metric += "|" + platform
			}
			got[metric] += v
		}
		if err := rows.Err(); err != nil {
			return err
		}
		var diff []string
		for m, v := range want {
			if got[m] != v {
				diff = append(diff, fmt.Sprintf("%s %d, want %d", m, got[m], v))
			}
		}
		if len(diff) > 0 {
			slices.Sort(diff)
			return errors.New(strings.Join(diff, "; "))
		}
		return nil
	})

	// Nothing went to the single Redis of the default -redis-url, which
	// -redis-cluster overrides.
	opt, err := redis.ParseURL(datastore.DefaultRedisURL)
	if err != nil {
		t.Fatal(err)
	}
	single := redis.NewClient(opt)
	defer single.Close()
	if err := single.Ping(ctx).Err(); err == nil {
		if k, _ := redistest.Keys(ctx, single, prefix); len(k) > 0 {
			t.Errorf("keys under %s on the single Redis %s: %v", prefix, opt.Addr, k[:min(len(k), 5)])
		}
		if ok, _ := single.SIsMember(ctx, keys.AsynqQueues, queue).Result(); ok {
			t.Errorf("queue %s was made on the single Redis %s", queue, opt.Addr)
		}
	}
	t.Logf("done %s after publishing", time.Since(sent).Round(time.Second))
}
