package e2e_test

// The Redis ACLs of deploy/README.md ("Redis ACLs per service") are enough
// for each service: the test reads the ACL SETUSER commands from the README
// itself, creates those users (under names of its own) on the test Redis,
// and runs the pipeline with every process logged in as its own user.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
	"github.com/nudgehq/nudge/push/sandbox"
)

// aclReadme is the document whose ACLs the test runs under.
const aclReadme = "../deploy/README.md"

// aclSection is the heading of the README section holding the ACLs.
const aclSection = "## Redis ACLs per service"

// aclServices are the users the README must define, one per service.
var aclServices = []string{"nudge-ingest", "nudge-worker", "nudge-flusher", "nudge-report", "nudge-producer"}

// aclDocPrefix is the key prefix the README's key patterns are written
// for (NUDGE_PREFIX's default); the test maps it to its own prefix.
const aclDocPrefix = keys.DefaultPrefix + ":"

// aclShards is the shard count of the run.
const aclShards = 4

// aclUser is one service's Redis user, as created for this run.
type aclUser struct {
	doc      string   // the name in the README, e.g. nudge-ingest
	name     string   // this run's name: doc + "-" + the test's key prefix
	password string   // random, this run's
	rules    []string // what ACL SETUSER got after the name
}

// url is the NUDGE_REDIS_URL of a process logged in as u.
func (u *aclUser) url() string {
	return "redis://" + url.UserPassword(u.name, u.password).String() + "@" + redistest.Addr() + "/0"
}

// client returns a go-redis client logged in as u, closed at the end of
// the test.
func (u *aclUser) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(), Username: u.name, Password: u.password})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestACLPipelineUnderDocumentedUsers publishes, ingests, reminds, pushes,
// flushes and reports with each process logged in as the README's user of
// its service, then checks that everything arrived and that Redis denied
// none of those users anything (ACL LOG).
func TestACLPipelineUnderDocumentedUsers(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	admin, prefix := redistest.New(t)
	ks := keys.New(prefix, aclShards)
	queue := harness.Queue(t, "acl", prefix)

	users := aclCreateUsers(t, admin, prefix)
	t.Logf("ACL users of this run: %s", strings.Join(aclNames(users), ", "))
	// Whatever happens next, ACL LOG is read once every process is gone
	// (cleanups run last in, first out) and before the users are deleted.
	t.Cleanup(func() { aclCheckLog(t, admin, users) })

	db, dbURL := pgtest.NewMigrated(t)
	sb, creds := harness.Sandbox(t, sandbox.Config{})
	bin := aclBuild(t)

	// The services, each as its own user.
	common := []string{"-prefix", prefix, "-shards", strconv.Itoa(aclShards), "-database-url", dbURL, "-log-level", "warn"}
	metrics := map[string]string{}
	for _, n := range []string{"ingest", "worker", "flusher", "report"} {
		metrics[n] = freeport.Addr(t)
	}
	ingest := aclStart(t, bin, "ingest", users["nudge-ingest"], append(common, "-queue", queue, "-stages", "2s",
		"-consumer", "acl-ingest", "-claim-idle", "5s", "-metrics-addr", metrics["ingest"])...)
	worker := aclStart(t, bin, "worker", users["nudge-worker"], append(append(common, "-queue", queue, "-stages", "2s",
		"-delayed-check-interval", "200ms", "-metrics-addr", metrics["worker"]), sb.WorkerArgs(creds)...)...)
	flusher := aclStart(t, bin, "flusher", users["nudge-flusher"], append(common,
		"-interval", "500ms", "-grace", "1s", "-metrics-addr", metrics["flusher"])...)
	reportAddr := freeport.Addr(t)
	token := aclRandomHex(t, 24)
	report := aclStart(t, bin, "report", users["nudge-report"], append([]string{"serve"}, append(common,
		"-addr", reportAddr, "-token", token, "-queues-read-only", "-metrics-addr", metrics["report"])...)...)
	for _, n := range []string{"ingest", "worker", "flusher", "report"} {
		aclWaitFor(t, 20*time.Second, n+" ready", func() (bool, string) {
			code, body := metricstest.Get(t, metrics[n], "/readyz")
			return code == http.StatusOK, fmt.Sprintf("/readyz %d %s", code, body)
		})
	}
	t.Logf("%.1fs: built and started ingest, worker, flusher and report", time.Since(start).Seconds())

	// A counter the worker wrote two minutes ago (as a deferred reminder
	// does, through counters.Add): a closed minute, for the flusher binary
	// to move while the pipeline runs. Its app keeps it apart from the
	// traffic's counters.
	seed := counters.Dims{Metric: counters.RemindersDefer, App: "aclseed", Reason: "online"}
	if err := counters.Add(ctx, users["nudge-worker"].client(t), ks, 0, time.Now().Add(-2*time.Minute),
		map[counters.Dims]int64{seed: 1}); err != nil {
		t.Fatalf("counters.Add as %s: %v", users["nudge-worker"].name, err)
	}

	// Traffic. The producer's user publishes all of it: first through
	// cmd/publish, then through package producer.
	o := oracle.New(128)
	n := 0
	ev := func(e event.Event) *event.Event {
		n++
		e.V, e.ID, e.TS = 1, "acl-"+strconv.Itoa(n), time.Now().UnixMilli()
		return &e
	}
	bobFCM, bobAPNs := sandbox.NewDeviceToken(event.PlatformFCM), sandbox.NewDeviceToken(event.PlatformAPNs)
	carolFCM, daveFCM := sandbox.NewDeviceToken(event.PlatformFCM), sandbox.NewDeviceToken(event.PlatformFCM)
	berlin := "Europe/Berlin"
	setup := []*event.Event{
		ev(event.Event{Type: event.TypeDeviceRegistered, User: "bob", Platform: event.PlatformFCM, Token: bobFCM}),
		ev(event.Event{Type: event.TypeDeviceRegistered, User: "bob", Platform: event.PlatformAPNs, Token: bobAPNs}),
		ev(event.Event{Type: event.TypeDeviceRegistered, User: "carol", Platform: event.PlatformFCM, Token: carolFCM}),
		ev(event.Event{Type: event.TypeDeviceRegistered, User: "dave", Platform: event.PlatformFCM, Token: daveFCM}),
		ev(event.Event{Type: event.TypePrefs, User: "frank", TimeZone: &berlin}),
		ev(event.Event{Type: event.TypePresence, User: "erin", Status: event.StatusOnline, Device: "phone"}),
		ev(event.Event{Type: event.TypePresence, User: "erin", Status: event.StatusOffline, Device: "phone"}),
	}
	aclPublishCommand(t, bin, users["nudge-producer"], prefix, setup)
	for _, e := range setup {
		o.Apply(e)
	}
	aclWaitFor(t, 20*time.Second, "devices and prefs in PostgreSQL", func() (bool, string) {
		var devices, prefs int
		_ = db.QueryRow(ctx, "SELECT count(*) FROM devices").Scan(&devices)
		_ = db.QueryRow(ctx, "SELECT count(*) FROM user_prefs").Scan(&prefs)
		return devices == 4 && prefs == 1, fmt.Sprintf("%d devices of 4, %d prefs of 1", devices, prefs)
	})

	pub := producer.New(users["nudge-producer"].client(t), producer.Config{Keyspace: ks})
	toBob := ev(event.Event{Type: event.TypeMessage, Conversation: "c1", Message: "m1", Sender: "alice", Recipients: []string{"bob"}, Preview: "lunch?"})
	traffic := []*event.Event{
		toBob,
		ev(event.Event{Type: event.TypeMessage, Conversation: "c2", Message: "m2", Sender: "alice", Recipients: []string{"carol"}, Preview: "call me"}),
		ev(event.Event{Type: event.TypeRead, Conversation: "c2", User: "carol"}),
		ev(event.Event{Type: event.TypeMessage, Conversation: "c3", Message: "m3", Sender: "alice", Recipients: []string{"dave"}, Preview: "hi"}),
		toBob, // re-published: applied once, counted as a duplicate
	}
	day := keys.Day(time.Now())
	if _, err := pub.PublishBatch(ctx, traffic); err != nil {
		t.Fatalf("publish as %s: %v", users["nudge-producer"].name, err)
	}
	for _, e := range traffic {
		o.Apply(e)
	}

	// Bob's two devices and dave's one get a reminder; carol read in time.
	// (Failures from here on are errors, not fatal: every check below
	// still runs and tells its part.)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sb.WaitFor(wctx, func(d []sandbox.Delivery) bool { return len(d) >= 3 }); err != nil {
		t.Errorf("pushes: %v; got %d", err, len(sb.Deliveries()))
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: redistest.Addr()})
	defer insp.Close()
	if ok, detail := aclEventually(20*time.Second, func() (bool, string) {
		q, err := insp.GetQueueInfo(queue)
		return err == nil && q.Pending+q.Active+q.Scheduled+q.Retry+q.Archived == 0, fmt.Sprintf("%+v %v", q, err)
	}); !ok {
		t.Errorf("the reminder queue did not drain: %s", detail)
	}
	for tok, want := range map[string]int{bobFCM: 1, bobAPNs: 1, daveFCM: 1, carolFCM: 0} {
		if got := len(sb.DeliveriesTo(tok)); got != want {
			t.Errorf("device %s…: %d pushes, want %d", tok[:8], got, want)
		}
	}
	if got := len(sb.Deliveries()); got != 3 {
		t.Errorf("%d pushes in all, want 3", got)
	}
	t.Logf("%.1fs: pushed, queue drained", time.Since(start).Seconds())

	// What the counters must say: the oracle's ingest counts, the
	// reminders (bob, carol, dave scheduled; carol's cancelled by her
	// read; bob's and dave's sent) and their pushes, and the seed.
	want := map[counters.Dims]int64{seed: 1}
	for m, v := range o.Counts() {
		want[counters.Dims{Metric: m, App: event.DefaultApp}] = v
	}
	for d, v := range map[counters.Dims]int64{
		{Metric: counters.RemindersQueued}:                        3,
		{Metric: counters.RemindersCancel}:                        1,
		{Metric: counters.RemindersSent}:                          2,
		{Metric: counters.PushSent, Platform: event.PlatformFCM}:  2,
		{Metric: counters.PushSent, Platform: event.PlatformAPNs}: 1,
		// Bob's reached both platforms, dave's FCM, both at stage 1.
		{Metric: counters.RemindersPushed, Platform: counters.PlatformSeveral, Reason: "1"}: 1,
		{Metric: counters.RemindersPushed, Platform: event.PlatformFCM, Reason: "1"}:        1,
	} {
		d.App = event.DefaultApp
		want[d] = v
	}

	// The report's live totals (Redis counters not flushed yet, read as the
	// report user, plus PostgreSQL) already say so; so does its queue UI.
	aclCheckReport(t, reportAddr, token, queue, want)
	// Browser sessions: a sign-out and `report sessions revoke-all`, which
	// write the report's own keys, as the report user.
	aclCheckSessions(t, bin, reportAddr, token, users["nudge-report"], prefix)

	// The deadletter command runs as the ingest user.
	dl := exec.Command(filepath.Join(bin, "deadletter"), "list", "-prefix", prefix, "-shards", strconv.Itoa(aclShards))
	dl.Env = aclEnv(users["nudge-ingest"])
	if out, err := dl.CombinedOutput(); err != nil || !strings.Contains(string(out), "no dead letters") {
		t.Errorf("deadletter list as nudge-ingest: %v\n%s", err, out)
	}

	// Ingest dead-lettered nothing, and the worker's asynq queue metrics
	// (the collector reads through asynq's inspector) are there. (Not
	// nudge_redis_errors_total: it also counts the CLIENT subcommands
	// go-redis tries on connect and that older servers do not know.)
	if v := metricstest.Value(t, metrics["ingest"], "nudge_ingest_dead_lettered_total"); v != 0 {
		t.Errorf("ingest: nudge_ingest_dead_lettered_total = %v, want 0", v)
	}
	// (The collector gives up on every queue when one fails, as when another
	// test deletes its queue meanwhile: ask again.)
	if ok, _ := aclEventually(5*time.Second, func() (bool, string) {
		_, body := metricstest.Get(t, metrics["worker"], "/metrics")
		return strings.Contains(body, `asynq_queue_size{queue="`+queue+`"}`), ""
	}); !ok {
		t.Errorf("worker /metrics has no asynq_queue_size of queue %s", queue)
	}

	// The flusher binary moved the closed minute; then every service stops
	// cleanly (releasing leases, leaving the group, clearing asynq's server
	// state, all as their users).
	if ok, detail := aclEventually(20*time.Second, func() (bool, string) {
		var v int64
		err := db.QueryRow(ctx, "SELECT coalesce(sum(value), 0)::bigint FROM counters_minute WHERE metric = $1 AND app = $2",
			seed.Metric, seed.App).Scan(&v)
		return err == nil && v == 1, fmt.Sprintf("%d %v", v, err)
	}); !ok {
		t.Errorf("the flusher binary did not flush the closed minute: %s", detail)
	}
	for _, p := range []*aclProc{ingest, worker, flusher, report} {
		p.stop(t)
		// Nor may a process have logged a refusal.
		for line := range strings.SplitSeq(p.logs.String(), "\n") {
			if aclRefusal(line) {
				t.Errorf("%s logged a refusal: %s", p.name, line)
			}
		}
	}

	// The last, still open minute: one more round as the flusher user, on a
	// clock two minutes ahead so it counts as closed (rather than waiting
	// up to a minute for it to close).
	fl, err := flush.New(users["nudge-flusher"].client(t), db, flush.Config{
		Keyspace: ks, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Now: func() time.Time { return time.Now().Add(2 * time.Minute) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := fl.FlushOnce(ctx); err != nil {
		t.Errorf("last flush round as %s: %v (%+v)", users["nudge-flusher"].name, err, st)
	}

	t.Logf("%.1fs: stopped, flushed", time.Since(start).Seconds())

	// PostgreSQL holds exactly the counters of the published events.
	got := map[counters.Dims]int64{}
	rows, err := db.Query(ctx, "SELECT metric, app, platform, reason, sum(value)::bigint FROM counters_minute GROUP BY 1, 2, 3, 4")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var d counters.Dims
		var v int64
		if err := rows.Scan(&d.Metric, &d.App, &d.Platform, &d.Reason, &v); err != nil {
			t.Fatal(err)
		}
		got[d] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, d := range aclDimsUnion(want, got) {
		if got[d] != want[d] {
			t.Errorf("counters_minute %s: %d, want %d", counters.Field(d), got[d], want[d])
		}
	}
	if left, err := redistest.Keys(ctx, admin, prefix+":{s"); err == nil {
		for _, k := range left {
			if strings.Contains(k, ":cnt:") || strings.Contains(k, ":snap:") {
				t.Errorf("counters left in Redis: %s", k)
			}
		}
	}
	// Daily active users: alice (sender), carol (reader), erin (presence).
	if keys.Day(time.Now()) == day {
		var dau int64
		err := db.QueryRow(ctx, "SELECT coalesce(sum(users), 0)::bigint FROM daily_active_users WHERE day = to_date($1, 'YYYYMMDD') AND app = $2",
			day, event.DefaultApp).Scan(&dau)
		if err != nil || dau != 3 {
			t.Errorf("daily_active_users of %s = %d (%v), want 3", day, dau, err)
		}
	}

	// Nothing was dead-lettered, for any reason.
	for s := range aclShards {
		entries, err := admin.XRange(ctx, ks.DeadLetter(s), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("dead-lettered in shard %d: reason %v: %v", s, e.Values["reason"], e.Values["detail"])
		}
	}
}

// aclCreateUsers reads the README's users, creates them under this run's
// names and deletes them when the test ends.
func aclCreateUsers(t *testing.T, admin *redis.Client, prefix string) map[string]*aclUser {
	t.Helper()
	ctx := context.Background()
	documented := aclDocumented(t)
	// go-redis sends CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS on
	// connect; where the server has them, the README's notes say to grant
	// them (Redis 7.0 has neither, and ACL SETUSER refuses to name them).
	var extra []string
	for _, sub := range []string{"client|setinfo", "client|maint_notifications"} {
		if info, err := admin.Do(ctx, "COMMAND", "INFO", sub).Slice(); err == nil && len(info) == 1 && info[0] != nil {
			extra = append(extra, "+"+sub)
		}
	}
	users := map[string]*aclUser{}
	for _, doc := range aclServices {
		args, ok := documented[doc]
		if !ok {
			t.Fatalf("%s: no ACL SETUSER %s in section %q", aclReadme, doc, aclSection)
		}
		u := &aclUser{doc: doc, name: doc + "-" + prefix, password: aclRandomHex(t, 16)}
		if u.name == "default" || !strings.HasPrefix(u.name, "nudge-") {
			t.Fatalf("refusing to touch user %q", u.name)
		}
		u.rules = aclRules(t, doc, args, u.password, prefix)
		u.rules = append(u.rules, extra...)
		t.Cleanup(func() {
			if err := admin.ACLDelUser(context.Background(), u.name).Err(); err != nil {
				t.Errorf("ACL DELUSER %s: %v", u.name, err)
			}
		})
		if err := admin.ACLSetUser(ctx, u.name, u.rules...).Err(); err != nil {
			t.Fatalf("ACL SETUSER %s (from %s): %v", u.name, aclReadme, err)
		}
		users[doc] = u
	}
	for doc := range documented {
		if !slices.Contains(aclServices, doc) {
			t.Errorf("%s defines user %s, which no service of this test runs as", aclReadme, doc)
		}
	}
	return users
}

// aclRules turns the README's rules of one user into this run's: the
// password placeholder becomes password, and key patterns written for the
// production prefix ("nudge:") use prefix instead. asynq's keys
// ("asynq:...", every queue's, the test queue's too) and channel are
// prefix-independent and stay as documented. Rules that would grant
// everything fail the test: the README is meant to be minimal.
func aclRules(t *testing.T, doc string, args []string, password, prefix string) []string {
	t.Helper()
	var out []string
	passwords := 0
	for _, r := range args {
		switch {
		case strings.HasPrefix(r, ">$"):
			passwords++
			out = append(out, ">"+password)
			continue
		case strings.HasPrefix(r, ">"), strings.HasPrefix(r, "#"), r == "nopass":
			t.Errorf("%s: %s: password rule %q: want a >$VARIABLE placeholder", aclReadme, doc, r)
			continue
		case slices.Contains([]string{"allkeys", "allchannels", "allcommands", "+@all", "~*", "&*", "%R~*", "%RW~*", "%W~*"}, r):
			t.Errorf("%s: %s grants %q: not a minimal set", aclReadme, doc, r)
			continue
		}
		if perm, pattern, ok := strings.Cut(r, "~"); ok && (perm == "" || perm[0] == '%') {
			switch {
			case strings.HasPrefix(pattern, aclDocPrefix):
				r = perm + "~" + prefix + ":" + strings.TrimPrefix(pattern, aclDocPrefix)
			case strings.HasPrefix(pattern, "asynq:"):
			default:
				t.Errorf("%s: %s: key pattern %q is neither Nudge's (%s*) nor asynq's", aclReadme, doc, r, aclDocPrefix)
			}
		}
		if ch, ok := strings.CutPrefix(r, "&"); ok && !strings.HasPrefix(ch, "asynq:") {
			t.Errorf("%s: %s: channel pattern %q is not asynq's", aclReadme, doc, r)
		}
		out = append(out, r)
	}
	if passwords != 1 {
		t.Errorf("%s: %s has %d password placeholders, want 1", aclReadme, doc, passwords)
	}
	return out
}

// aclDocumented returns the README's ACL SETUSER commands: user name ->
// the rules after it, as the shell would pass them to redis-cli.
func aclDocumented(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(aclReadme)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+aclSection+"\n")
	if !ok {
		t.Fatalf("%s: no section %q", aclReadme, aclSection)
	}
	if next := strings.Index(section, "\n## "); next >= 0 {
		section = section[:next]
	}
	var block []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(section))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			if in {
				break
			}
			in = true
			continue
		}
		if in {
			block = append(block, line)
		}
	}
	if len(block) == 0 {
		t.Fatalf("%s: section %q has no code block", aclReadme, aclSection)
	}
	// Join continued lines, then read each command.
	var lines []string
	cur := ""
	for _, l := range block {
		if s, ok := strings.CutSuffix(l, `\`); ok {
			cur += s + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	users := map[string][]string{}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case l == "", strings.HasPrefix(l, "#"), strings.HasPrefix(l, "R="):
			continue
		}
		words, err := aclShellWords(l)
		if err != nil {
			t.Fatalf("%s: %q: %v", aclReadme, l, err)
		}
		if len(words) < 4 || words[0] != "$R" || !strings.EqualFold(words[1], "ACL") || !strings.EqualFold(words[2], "SETUSER") {
			t.Fatalf("%s: section %q: line %q is not `$R ACL SETUSER <user> <rules...>`", aclReadme, aclSection, l)
		}
		if _, dup := users[words[3]]; dup {
			t.Fatalf("%s: user %s is set twice", aclReadme, words[3])
		}
		users[words[3]] = words[4:]
	}
	return users
}

// aclShellWords splits a command line as a POSIX shell would, for the
// quoting the README uses: '...', "..." (kept verbatim, $VARIABLES
// included) and backslash escapes.
func aclShellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case ch == '\\':
			if i+1 < len(s) {
				i++
				w.WriteByte(s[i])
			}
			inWord = true
		case ch == '\'' || ch == '"':
			j := strings.IndexByte(s[i+1:], ch)
			if j < 0 {
				return nil, fmt.Errorf("unterminated %c", ch)
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		default:
			w.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// aclCheckLog fails the test for every ACL LOG entry of one of users: a
// command, key or channel Redis refused them, or a failed login.
func aclCheckLog(t *testing.T, admin *redis.Client, users map[string]*aclUser) {
	t.Helper()
	names := aclNames(users)
	entries, err := admin.ACLLog(context.Background(), 1000).Result()
	if err != nil {
		t.Errorf("ACL LOG: %v", err)
		return
	}
	for _, e := range entries {
		if slices.Contains(names, e.Username) {
			t.Errorf("ACL LOG: %s denied %d time(s): reason %s, context %s, object %q", e.Username, e.Count, e.Reason, e.Context, e.Object)
		}
	}
}

// aclRefusal reports whether a log line quotes an ACL refusal: NOPERM
// replies, and the plain ERR that Redis 7.0 answers when a script's
// command is refused ("The user executing the script can't run this
// command", "... can't access at least one of the keys").
func aclRefusal(line string) bool {
	for _, s := range []string{"NOPERM", "no permissions to", "The user executing the script can't"} {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

func aclNames(users map[string]*aclUser) []string {
	var names []string
	for _, doc := range aclServices {
		if u, ok := users[doc]; ok {
			names = append(names, u.name)
		}
	}
	return names
}

// aclCheckReport asks the report server, which reads Redis as the report
// user, for the live totals of the default app and for its queue UI's view
// of the test queue.
func aclCheckReport(t *testing.T, addr, token, queue string, want map[counters.Dims]int64) {
	t.Helper()
	byMetric := map[string]int64{}
	for d, v := range want {
		if d.App == event.DefaultApp {
			byMetric[d.Metric] += v
		}
	}
	var metrics []string
	for m := range byMetric {
		metrics = append(metrics, m)
	}
	slices.Sort(metrics)
	path := "/api/totals?live=1&from=-1h&to=now&app=" + event.DefaultApp + "&metric=" + strings.Join(metrics, ",")
	// A minute that the flusher binary snapshots between the report's two
	// Redis reads may be missing from one answer: ask again.
	var last string
	ok := false
	for range 5 {
		code, body := aclGet(t, addr, token, path)
		last = fmt.Sprintf("%d %s", code, body)
		if code != http.StatusOK {
			break
		}
		var res struct {
			Live   bool `json:"live"`
			Totals []struct {
				Metric string `json:"metric"`
				Value  int64  `json:"value"`
			} `json:"totals"`
		}
		if err := json.Unmarshal(body, &res); err != nil {
			last += " " + err.Error()
			break
		}
		got := map[string]int64{}
		for _, tot := range res.Totals {
			got[tot.Metric] += tot.Value
		}
		if len(got) == len(byMetric) && func() bool {
			for m, v := range byMetric {
				if got[m] != v {
					return false
				}
			}
			return true
		}() {
			ok = true
			break
		}
		last = fmt.Sprintf("got %v, want %v", got, byMetric)
		time.Sleep(300 * time.Millisecond)
	}
	if !ok {
		t.Errorf("report live totals: %s", last)
	}
	for _, p := range []string{
		"/queues/api/queues/" + queue,
		"/queues/api/queues/" + queue + "/completed_tasks",
		"/queues/api/queues/" + queue + "/scheduled_tasks",
		"/queues/api/servers",
		"/queues/api/redis_info",
	} {
		if code, body := aclGet(t, addr, token, p); code != http.StatusOK {
			t.Errorf("report GET %s: %d %s", p, code, body)
		}
	}
}

// aclCheckSessions signs in to the report server, signs out, and checks
// the cookie is refused; then signs in again, runs `report sessions
// revoke-all` as u, and checks that cookie is refused too.
func aclCheckSessions(t *testing.T, bin, addr, token string, u *aclUser, prefix string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path string, form url.Values, cookie string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != "" {
			req.Header.Set("Cookie", "nudge_report_session="+cookie)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		for _, c := range res.Cookies() {
			if c.Name == "nudge_report_session" && c.Value != "" {
				return res.StatusCode, c.Value
			}
		}
		return res.StatusCode, ""
	}
	session := func(cookie string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/metrics", nil)
		req.Header.Set("Cookie", "nudge_report_session="+cookie)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	code, cookie := post("/login", url.Values{"token": {token}}, "")
	if cookie == "" {
		t.Errorf("report sign-in: %d without a session", code)
		return
	}
	if code, _ := post("/logout", url.Values{}, cookie); code != http.StatusSeeOther {
		t.Errorf("report sign-out: %d", code)
	}
	if code := session(cookie); code != http.StatusUnauthorized {
		t.Errorf("report: a signed-out session got %d, want 401", code)
	}
	_, cookie = post("/login", url.Values{"token": {token}}, "")
	cmd := exec.Command(filepath.Join(bin, "report"), "sessions", "revoke-all", "-prefix", prefix)
	cmd.Env = aclEnv(u)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("report sessions revoke-all as %s: %v\n%s", u.name, err, out)
	}
	if code := session(cookie); code != http.StatusUnauthorized {
		t.Errorf("report: a session after revoke-all got %d, want 401", code)
	}
	// A one-time sign-in link, made as u, opens a session once.
	cmd = exec.Command(filepath.Join(bin, "report"), "sessions", "sign-in-link", "-prefix", prefix, "-url", "http://"+addr)
	cmd.Env = aclEnv(u)
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("report sessions sign-in-link as %s: %v", u.name, err)
		return
	}
	link := strings.TrimSpace(string(out))
	for i, want := range []int{http.StatusSeeOther, http.StatusUnauthorized} {
		res, err := client.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("report: sign-in link %s, use %d: %d, want %d", link, i+1, res.StatusCode, want)
		}
		if i == 0 {
			for _, c := range res.Cookies() {
				if c.Name == "nudge_report_session" && session(c.Value) != http.StatusOK {
					t.Errorf("report: the sign-in link's session is refused")
				}
			}
		}
	}
}

func aclGet(t *testing.T, addr, token, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// aclBuild builds the commands the test runs into a directory of its own.
func aclBuild(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(os.PathSeparator),
		"../cmd/ingest", "../cmd/worker", "../cmd/flusher", "../cmd/report", "../cmd/publish", "../cmd/deadletter")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// aclEnv is the environment of a command logged in as u: the test's own,
// minus any NUDGE_* setting, plus the Redis URL (a password belongs in
// the environment, not on the command line).
func aclEnv(u *aclUser) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NUDGE_") {
			env = append(env, kv)
		}
	}
	return append(env, "NUDGE_REDIS_URL="+u.url())
}

// aclProc is a running command.
type aclProc struct {
	name string
	cmd  *exec.Cmd
	logs harness.Buffer // its standard output and error
	done chan struct{}
	err  error // of Wait, once done is closed
}

// aclStart starts command name of bin as user u; it is killed at the end of
// the test if still running.
func aclStart(t *testing.T, bin, name string, u *aclUser, args ...string) *aclProc {
	t.Helper()
	p := &aclProc{name: name, cmd: exec.Command(filepath.Join(bin, name), args...), done: make(chan struct{})}
	p.cmd.Env = aclEnv(u)
	out := io.MultiWriter(t.Output(), &p.logs)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit within 30s.
func (p *aclProc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		t.Errorf("%s exited early: %v", p.name, p.err)
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s: %v", p.name, p.err)
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

// aclPublishCommand publishes events through cmd/publish, as user u.
func aclPublishCommand(t *testing.T, bin string, u *aclUser, prefix string, events []*event.Event) {
	t.Helper()
	var lines []string
	for _, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	cmd := exec.Command(filepath.Join(bin, "publish"), "-prefix", prefix, "-shards", strconv.Itoa(aclShards))
	cmd.Env = aclEnv(u)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("publish as %s: %v\n%s", u.name, err, out)
	}
	if want := fmt.Sprintf("published %d events", len(events)); !strings.Contains(string(out), want) {
		t.Fatalf("publish: %q, want %q", out, want)
	}
}

// aclWaitFor polls cond until it holds, failing the test after timeout
// with cond's last word.
func aclWaitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if ok, detail := aclEventually(timeout, cond); !ok {
		t.Fatalf("%s: not after %s: %s", what, timeout, detail)
	}
}

// aclEventually polls cond until it holds or timeout passes; it returns
// cond's last answer.
func aclEventually(timeout time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok || time.Now().After(deadline) {
			return ok, detail
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func aclRandomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// aclDimsUnion returns the keys of both maps, sorted.
func aclDimsUnion(a, b map[counters.Dims]int64) []counters.Dims {
	var out []counters.Dims
	for d := range a {
		out = append(out, d)
	}
	for d := range b {
		if _, ok := a[d]; !ok {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(x, y counters.Dims) int { return strings.Compare(counters.Field(x), counters.Field(y)) })
	return out
}

// An ingest whose Redis user lacks a command its scripts call refuses to
// start, naming the command, instead of failing batches halfway (after
// their unread state was written, before their counters).
func TestIngestRefusesAUserMissingAScriptCommand(t *testing.T) {
	ctx := context.Background()
	admin, prefix := redistest.New(t)
	users := aclCreateUsers(t, admin, prefix)
	u := users["nudge-ingest"]
	if err := admin.Do(ctx, "ACL", "SETUSER", u.name, "-pfadd").Err(); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), "../cmd/ingest").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, filepath.Join(bin, "ingest"), "-prefix", prefix, "-shards", "2", "-database-url", "",
		"-queue", "acl-"+prefix, "-metrics-addr=")
	cmd.Env = aclEnv(u)
	out, err := cmd.CombinedOutput()
	if cctx.Err() != nil {
		t.Fatalf("ingest still running after 30 s with a user without PFADD:\n%s", out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "+pfadd") {
		t.Errorf("ingest with a user without PFADD: %v, want exit 1 naming +pfadd:\n%s", err, out)
	}
}
