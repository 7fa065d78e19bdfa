package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/loadgen"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
	"github.com/nudgehq/nudge/push/sandbox"
)

// The lifetimes the binaries let the test shorten, so that it waits for
// keys to expire instead of assuming they will.
const (
	memShards      = 8
	memDedupe      = 5 * time.Second  // ingest -dedupe-window: seen sets live 2 × 5 s
	memPresenceTTL = 2 * time.Second  // ingest -presence-ttl
	memUnreadTTL   = time.Minute      // ingest -unread-ttl: its minimum; conv and recent live 1 min from creation
	memClaimIdle   = 5 * time.Second  // ingest -claim-idle: lease and members TTLs (idle keys, renewed)
	memRateWindow  = 2 * time.Second  // worker -rate-window: a rate key expires 1 min after its window (jobs/worker.go)
	memEvents      = 30_000           // traffic entries
	memWait        = 80 * time.Second // longest wait for the end state, after the reads
)

// memStages is the reminder ladder of ingest and worker. Its second stage
// comes due within the test, so the queue really empties. With a second
// stage longer than the test (NUDGE_TEST_MEM_STAGES=1s,10m) the reminded
// episodes' second stages outlive the reads, as they do with the default
// ladder (5m,1h,24h): the test counts them as stale "next stage" tasks
// (see memStaleTask).
func memStages() string {
	if s := os.Getenv("NUDGE_TEST_MEM_STAGES"); s != "" {
		return s
	}
	return "1s,2s"
}

// memLongLived are the documented keys under the prefix whose lifetime no
// flag shortens and that outlive the test: each must have a TTL within its
// documented bound, and they are counted apart from the baseline. (asynq's
// retained tasks and the stale reminders are checked on their own.)
var memLongLived = map[string]struct {
	maxTTL time.Duration
	why    string
}{
	"sent": {48*time.Hour + time.Minute, "jobs.Config.SentTTL (48 h) is not a flag: one set per finished reminder stage"},
	"dau":  {48*time.Hour + time.Minute, "active-user HyperLogLogs live 2 days by design (one per shard, app and day)"},
	// dauidx: "old days removed by the flusher; TTL 2 days" - today's entry stays.
	"dauidx": {48*time.Hour + time.Minute, "index of today's HyperLogLogs, one per shard"},
}

// memRetention is asynq's retention of completed reminder tasks
// (jobs.Config.Retention, not a flag of ingest or worker).
const memRetention = time.Hour

// memDocRow is one key of docs/keys.md.
type memDocRow struct {
	pattern   string // as documented, e.g. <p>:{s<k>}:seen:<bucket>
	re        *regexp.Regexp
	wantTTL   bool // the "bounded by" column names a TTL or an expiry
	boundedBy string
}

// memParseDocs reads the key table of docs/keys.md and turns each key
// pattern into a regular expression for this run's prefix and queue, so
// that the documentation and the test cannot drift apart.
func memParseDocs(t *testing.T, prefix, queue string) []memDocRow {
	t.Helper()
	b, err := os.ReadFile("../docs/keys.md")
	if err != nil {
		t.Fatal(err)
	}
	placeholder := regexp.MustCompile(`<[^>]+>|\.\.\.`)
	var rows []memDocRow
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "\x00"), "|")
		if len(cells) < 5 {
			t.Fatalf("docs/keys.md: bad row %q", line)
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(strings.ReplaceAll(cells[i], "\x00", "|"))
		}
		pat := strings.Trim(cells[1], "`")
		// The asynq row names the default queue; this run has its own.
		if strings.HasPrefix(pat, "asynq:{") {
			if _, rest, ok := strings.Cut(pat, "}"); ok {
				pat = "asynq:{" + queue + "}" + rest
			}
		}
		var re strings.Builder
		re.WriteString("^")
		last := 0
		for _, m := range placeholder.FindAllStringIndex(pat, -1) {
			re.WriteString(regexp.QuoteMeta(pat[last:m[0]]))
			switch tok := pat[m[0]:m[1]]; tok {
			case "<p>":
				re.WriteString(regexp.QuoteMeta(prefix))
			case "<k>":
				re.WriteString("[0-9]+")
			default:
				re.WriteString(".+")
			}
			last = m[1]
		}
		re.WriteString(regexp.QuoteMeta(pat[last:]) + "$")
		bounded := cells[4]
		rows = append(rows, memDocRow{
			pattern:   strings.Trim(cells[1], "`"),
			re:        regexp.MustCompile(re.String()),
			wantTTL:   strings.Contains(bounded, "TTL") || strings.Contains(bounded, "expire"),
			boundedBy: bounded,
		})
	}
	if len(rows) < 15 {
		t.Fatalf("docs/keys.md: found %d key rows, want the whole table", len(rows))
	}
	return rows
}

// memKey is one key as measured.
type memKey struct {
	typ string
	ttl time.Duration // -1: none
	mem int64         // MEMORY USAGE, all nested values sampled
}

// memSnapshot is every key of the run: under the prefix, and the queue's
// asynq keys.
type memSnapshot map[string]memKey

func (s memSnapshot) bytes(keep func(string) bool) (n int, b int64) {
	for k, v := range s {
		if keep == nil || keep(k) {
			n++
			b += v.mem
		}
	}
	return n, b
}

func memMeasure(t *testing.T, rdb *redis.Client, prefix, queue string) memSnapshot {
	t.Helper()
	ctx := context.Background()
	var names []string
	for _, p := range []string{prefix + ":", keys.AsynqQueue(queue)} {
		ks, err := redistest.Keys(ctx, rdb, p)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, ks...)
	}
	out := memSnapshot{}
	for chunk := range slices.Chunk(names, 500) {
		pipe := rdb.Pipeline()
		types := make([]*redis.StatusCmd, len(chunk))
		ttls := make([]*redis.DurationCmd, len(chunk))
		mems := make([]*redis.IntCmd, len(chunk))
		for i, k := range chunk {
			types[i] = pipe.Type(ctx, k)
			ttls[i] = pipe.PTTL(ctx, k)
			mems[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		_, _ = pipe.Exec(ctx) // a key gone in between answers nil
		for i, k := range chunk {
			if types[i].Val() == "none" || types[i].Val() == "" || mems[i].Err() != nil {
				continue
			}
			ttl := ttls[i].Val()
			if ttl < 0 {
				ttl = -1
			}
			out[k] = memKey{typ: types[i].Val(), ttl: ttl, mem: mems[i].Val()}
		}
	}
	return out
}

// memKind names a key for reports: the documented pattern it matches, or
// the key with its variable parts cut off.
func memKind(rows []memDocRow, k string) string {
	for _, r := range rows {
		if r.re.MatchString(k) {
			return r.pattern
		}
	}
	if _, rest, ok := strings.Cut(k, "}:"); ok {
		kind, _, _ := strings.Cut(rest, ":")
		return "undocumented " + k[:len(k)-len(rest)] + kind + "…"
	}
	return "undocumented " + k
}

// memShort is the part of a prefix key after the hash tag, up to the next
// colon ("seen", "ep", ...), or "" for other keys.
func memShort(prefix, k string) string {
	if !strings.HasPrefix(k, prefix+":") {
		return ""
	}
	_, rest, ok := strings.Cut(k, "}:")
	if !ok {
		return ""
	}
	kind, _, _ := strings.Cut(rest, ":")
	return kind
}

// memAsynqOwners returns the task ids each of the queue's state sets holds,
// read in one transaction so that a task moving between states is seen in
// exactly one of them; and the retention deadline of each completed task.
func memAsynqOwners(t *testing.T, rdb *redis.Client, queue string) (owned map[string]string, completedUntil map[string]time.Time) {
	t.Helper()
	ctx := context.Background()
	q := keys.AsynqQueue(queue)
	pipe := rdb.TxPipeline()
	zsets := map[string]*redis.ZSliceCmd{}
	for _, s := range []string{"scheduled", "retry", "archived", "completed"} {
		zsets[s] = pipe.ZRangeWithScores(ctx, q+s, 0, -1)
	}
	lists := map[string]*redis.StringSliceCmd{}
	for _, s := range []string{"pending", "active"} {
		lists[s] = pipe.LRange(ctx, q+s, 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	owned, completedUntil = map[string]string{}, map[string]time.Time{}
	for s, c := range zsets {
		for _, z := range c.Val() {
			id := z.Member.(string)
			owned[id] = s
			if s == "completed" {
				completedUntil[id] = time.Unix(int64(z.Score), 0)
			}
		}
	}
	for s, c := range lists {
		for _, id := range c.Val() {
			owned[id] = s
		}
	}
	return owned, completedUntil
}

// memCheckBounded reports every key that matches no documented pattern, or
// lacks the TTL its row promises, or is an owned key without its owner: a
// stream (trimmed by ingest, or MAXLEN), or an asynq task hash that none of
// the queue's state sets refers to. Keys caught between two writes (a TTL
// set by the next command of a pipeline) are looked at again before they
// count as offenders.
func memCheckBounded(t *testing.T, rdb *redis.Client, rows []memDocRow, snap memSnapshot, queue string) map[string][]string {
	t.Helper()
	ctx := context.Background()
	taskPrefix := keys.AsynqTask(queue, "")
	check := func(snap memSnapshot, owned map[string]string) map[string]string {
		bad := map[string]string{} // key -> why
		for k, v := range snap {
			var row *memDocRow
			for i := range rows {
				if rows[i].re.MatchString(k) {
					row = &rows[i]
					break
				}
			}
			switch {
			case row == nil:
				bad[k] = "matches no pattern of docs/keys.md"
			case row.wantTTL && v.ttl < 0:
				bad[k] = "has no TTL, but docs/keys.md bounds it by one: " + row.boundedBy
			case row.wantTTL:
			case v.ttl >= 0:
			case v.typ == "stream":
			case strings.HasPrefix(k, taskPrefix):
				if owned[strings.TrimPrefix(k, taskPrefix)] == "" {
					bad[k] = "asynq task in none of the queue's state sets"
				}
			case strings.HasPrefix(k, "asynq:{"):
				// The queue's own structures (state sets, lease, totals).
			default:
				bad[k] = fmt.Sprintf("%s without a TTL and no owner the test knows", v.typ)
			}
		}
		return bad
	}
	owned, _ := memAsynqOwners(t, rdb, queue)
	bad := check(snap, owned)
	if len(bad) > 0 {
		time.Sleep(300 * time.Millisecond)
		again := memSnapshot{}
		for k := range bad {
			pipe := rdb.Pipeline()
			typ, ttl, mem := pipe.Type(ctx, k), pipe.PTTL(ctx, k), pipe.MemoryUsage(ctx, k, 0)
			_, _ = pipe.Exec(ctx)
			if typ.Val() == "none" || mem.Err() != nil {
				continue // gone: it was on its way out
			}
			d := ttl.Val()
			if d < 0 {
				d = -1
			}
			again[k] = memKey{typ: typ.Val(), ttl: d, mem: mem.Val()}
		}
		owned, _ = memAsynqOwners(t, rdb, queue)
		bad = check(again, owned)
	}
	byKind := map[string][]string{}
	for k, why := range bad {
		kind := memKind(rows, k)
		byKind[kind] = append(byKind[kind], k+": "+why)
	}
	return byKind
}

func memReportOffenders(t *testing.T, when string, byKind map[string][]string) {
	t.Helper()
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		list := byKind[kind]
		sort.Strings(list)
		t.Errorf("%s: %d keys of %s, e.g. %s", when, len(list), kind, strings.Join(list[:min(3, len(list))], "; "))
	}
}

// memStaleHorizon: a scheduled reminder due later than this is not waited
// for. The wait for the queue to empty is longer (memQueueWait): a
// reminder due within the horizon runs before the wait ends. (A reminder
// put off to the end of quiet hours that end a minute after the reads, as
// 13:00-14:00 in Australia/Sydney does at 02:58 UTC, is due beyond it.)
const memStaleHorizon = 20 * time.Second

// memQueueWait bounds the wait for the reminder queue to empty.
const memQueueWait = memStaleHorizon + 25*time.Second

// memStaleMax bounds how long a stale reminder waits: a user's first
// reminder delay is at most 7 days (event.MaxReminderDelay), quiet hours
// last less than a day.
const memStaleMax = 8 * 24 * time.Hour

// memStaleTask is a scheduled reminder of an episode that is not open,
// due beyond memStaleHorizon. Scheduler.EpisodesClosed deletes, on read,
// only the first of the episode's task ids (rem:<user>|<conv>|<episode>|<stage>)
// that it can delete; such a task waits until it comes due, runs, finds no
// open episode and finishes as cancelled. Three kinds:
//   - deferred: a follow-up (id ...|d<n>) the worker made to put the
//     reminder off past quiet hours; EpisodesClosed does not know its id;
//   - next stage: the stage after one that ran; EpisodesClosed deleted the
//     completed (retained) task of the stage that ran instead, and stopped;
//   - finished batch: a task of reminders of one shard due in the same
//     second, every one of them finished (cancelled by a read):
//     EpisodesClosed cannot delete a task for some of its reminders;
//   - not opened: a first reminder planned for an episode that did not
//     open under that id (ingest plans the episodes a batch may open:
//     after a partial read in the same batch, the message that follows
//     plans a new episode while the old one stays open; ingest.Hooks).
type memStaleTask struct {
	due  time.Time
	kind string
}

// memStale returns the queue's stale reminders by task id, and lists every
// other scheduled task in others.
func memStale(t *testing.T, insp *asynq.Inspector, rdb *redis.Client, ks keys.Keyspace, queue string) (stale map[string]memStaleTask, others []string) {
	t.Helper()
	ctx := context.Background()
	stale = map[string]memStaleTask{}
	for page := 1; ; page++ {
		tasks, err := insp.ListScheduledTasks(queue, asynq.PageSize(1000), asynq.Page(page))
		if err != nil {
			if errors.Is(err, asynq.ErrQueueNotFound) {
				return stale, nil
			}
			t.Fatal(err)
		}
		for _, ti := range tasks {
			rs, err := jobs.DecodeTask(ti.Type, ti.Payload)
			finished := err == nil
			for _, r := range rs {
				if !rdb.SIsMember(ctx, ks.Sent(r.Shard, r.ID()), "!done").Val() {
					finished = false
				}
			}
			if finished && ti.Type == jobs.TypeBatch {
				// Every reminder of the batch is finished (cancelled by
				// a read): the task cannot be deleted for one of them,
				// and runs when due, doing nothing.
				stale[ti.ID] = memStaleTask{due: ti.NextProcessAt, kind: "finished batch"}
				continue
			}
			why := ""
			switch {
			case err != nil:
				why = "bad payload"
			case time.Until(ti.NextProcessAt) < memStaleHorizon:
				why = "due soon"
			}
			for _, r := range rs {
				if why == "" && rdb.HGet(ctx, ks.Episode(r.Shard, r.User, r.Conversation), "id").Val() == r.Episode {
					why = "episode still open"
				}
			}
			if why != "" {
				what := ""
				if len(rs) > 0 {
					what = fmt.Sprintf("; %d reminders, the first stage %d, put off %d, tried %d", len(rs), rs[0].Stage, rs[0].Defers, rs[0].Tries)
				}
				others = append(others, fmt.Sprintf("%s (%s, due in %s%s)", ti.ID, why, time.Until(ti.NextProcessAt).Round(time.Second), what))
				continue
			}
			r := rs[0]
			kind := "not opened"
			switch {
			case r.Defers > 0 || r.Tries > 0:
				kind = "deferred"
			case r.Stage > 1:
				kind = "next stage"
			}
			stale[ti.ID] = memStaleTask{due: ti.NextProcessAt, kind: kind}
		}
		if len(tasks) < 1000 {
			return stale, others
		}
	}
}

// memProc is one of the binaries, run until the test ends.
type memProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func memStart(t *testing.T, bin, logDir, name string, env, args []string) *memProc {
	t.Helper()
	p := &memProc{name: name, log: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		// SIGTERM: ingest gives back its leases, the worker clears its
		// asynq server state.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("last lines of %s:\n%s", p.name, strings.Join(lines[max(0, len(lines)-20):], "\n"))
		}
	})
	return p
}

// memDrained reports whether ingest read and applied every entry of every
// shard.
func memDrained(rdb *redis.Client, ks keys.Keyspace) (bool, string) {
	ctx := context.Background()
	for s := 0; s < ks.Shards; s++ {
		info, err := rdb.XInfoStream(ctx, ks.Stream(s)).Result()
		if err != nil {
			return false, err.Error()
		}
		groups, err := rdb.XInfoGroups(ctx, ks.Stream(s)).Result()
		if err != nil {
			return false, err.Error()
		}
		for _, g := range groups {
			if g.Pending > 0 || g.LastDeliveredID != info.LastGeneratedID {
				return false, fmt.Sprintf("shard %d: %d pending, delivered up to %s of %s", s, g.Pending, g.LastDeliveredID, info.LastGeneratedID)
			}
		}
	}
	return true, ""
}

// After a long run, the reads of every conversation and one flush, the
// run's Redis keys come back to the idle baseline: every key left has a TTL
// or an owner, the keys with short configured lifetimes are gone, the
// baseline's keys are the same keys within a constant number of bytes, and
// what remains beyond them are the keys whose lifetime no flag shortens,
// each within its documented bound: sent sets and active users
// (memLongLived), asynq's completed tasks (retained 1 h) and totals, and
// the stale reminders of read episodes (memStaleTask). At the peak, before
// the reads, every key matches a pattern of docs/keys.md and has the TTL or
// the owner the table gives it.
func TestMemoryReturnsToBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ingest, worker and flusher for about 80 s")
	}
	began := time.Now()
	ctx := context.Background()
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, memShards)
	queue := harness.Queue(t, "mem", prefix)
	rows := memParseDocs(t, prefix, queue)

	db, dbURL := pgtest.NewMigrated(t)
	sb, creds := harness.Sandbox(t, sandbox.Config{})
	dir := t.TempDir()

	// Build the three commands into the test's own directory.
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/ingest", "./cmd/worker", "./cmd/flusher")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	built := time.Now()

	env := []string{"NUDGE_PREFIX=" + prefix, "NUDGE_SHARDS=" + strconv.Itoa(memShards), "NUDGE_DATABASE_URL=" + dbURL,
		"NUDGE_REDIS_URL=redis://" + redistest.Addr() + "/0", "NUDGE_QUEUE=" + queue, "NUDGE_STAGES=" + memStages(),
		"NUDGE_LOG_LEVEL=warn"}
	addrs := map[string]string{"ingest": freeport.Addr(t), "worker": freeport.Addr(t), "flusher": freeport.Addr(t)}
	memStart(t, filepath.Join(bin, "ingest"), dir, "ingest", env, []string{"-consumer", "mem-1", "-metrics-addr", addrs["ingest"],
		"-claim-idle", memClaimIdle.String(), "-dedupe-window", memDedupe.String(), "-presence-ttl", memPresenceTTL.String(),
		"-unread-ttl", memUnreadTTL.String()})
	memStart(t, filepath.Join(bin, "worker"), dir, "worker", env, append([]string{"-metrics-addr", addrs["worker"],
		"-delayed-check-interval", "200ms", "-rate-limit", "3", "-rate-window", memRateWindow.String()}, sb.WorkerArgs(creds)...))
	memStart(t, filepath.Join(bin, "flusher"), dir, "flusher", env, []string{"-metrics-addr", addrs["flusher"],
		"-interval", "1s", "-grace", "1s"})
	for name, addr := range addrs {
		poll.UntilState(t, 20*time.Second, name+" ready", func() (bool, string) {
			code, body := metricstest.Get(t, addr, "/readyz")
			return code == 200, body
		})
	}

	// The idle baseline: ingest holds every shard's lease, the flusher its
	// own, and two measurements a second apart name the same keys.
	poll.UntilState(t, 20*time.Second, "every lease taken", func() (bool, string) {
		n := 0
		for s := 0; s < memShards; s++ {
			n += int(rdb.Exists(ctx, ks.Lease(s)).Val())
		}
		return n == memShards && rdb.Exists(ctx, prefix+":{flusher}:lease").Val() == 1, fmt.Sprintf("%d shard leases", n)
	})
	var base memSnapshot
	poll.UntilState(t, 10*time.Second, "a stable idle baseline", func() (bool, string) {
		prev := base
		time.Sleep(time.Second)
		base = memMeasure(t, rdb, prefix, queue)
		if prev == nil || len(prev) != len(base) {
			return false, fmt.Sprintf("%d keys", len(base))
		}
		for k := range base {
			if _, ok := prev[k]; !ok {
				return false, "new key " + k
			}
		}
		return true, ""
	})
	baseN, baseB := base.bytes(nil)
	if bad := memCheckBounded(t, rdb, rows, base, queue); len(bad) > 0 {
		memReportOffenders(t, "idle", bad)
	}
	t.Logf("idle baseline: %d keys, %d bytes (%s)", baseN, baseB, memKinds(rows, base))

	// Traffic, recorded to compute who is left with unread messages.
	var record bytes.Buffer
	gen, err := loadgen.New(rdb, loadgen.Config{
		Seed: 3, IDPrefix: "mem" + prefix, Users: 3000, Conversations: 800, GroupSizeMax: 12, LargeGroupFraction: -1,
		ReadDelay: 2 * time.Second, ReadDelayMax: 10 * time.Second, DeviceFraction: 0.8,
		Total: memEvents, Keyspace: ks, Record: &record,
	})
	if err != nil {
		t.Fatal(err)
	}
	trafficStart := time.Now()
	st, err := gen.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	trafficTime := time.Since(trafficStart)
	poll.UntilState(t, 60*time.Second, "ingest to apply the traffic", func() (bool, string) { return memDrained(rdb, ks) })
	applied := time.Now()

	o := oracle.New(128)
	sc := bufio.NewScanner(&record)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for sc.Scan() {
		e, err := event.Decode(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		o.Apply(e)
	}
	unread := o.Unread()

	// The peak, before the reads: every key documented, with its TTL or
	// owner.
	peak := memMeasure(t, rdb, prefix, queue)
	peakN, peakB := peak.bytes(nil)
	if bad := memCheckBounded(t, rdb, rows, peak, queue); len(bad) > 0 {
		memReportOffenders(t, "peak", bad)
	}
	eps := 0
	for k := range peak {
		if memShort(prefix, k) == "ep" {
			eps++
		}
	}
	t.Logf("traffic: %d entries in %s (%d messages, %d reads, %d setup); applied %s after the start",
		st.Events, trafficTime.Round(time.Millisecond), st.Messages, st.Reads, st.Setup, applied.Sub(trafficStart).Round(time.Millisecond))
	t.Logf("peak: %d keys, %d bytes; %d unread episodes (oracle %d); %s", peakN, peakB, eps, len(unread), memKinds(rows, peak))

	// Every user with unread messages reads each of those conversations.
	pub := producer.New(rdb, producer.Config{Keyspace: ks})
	var reads []*event.Event
	now := time.Now().UnixMilli()
	for k := range unread {
		reads = append(reads, &event.Event{V: event.Version, Type: event.TypeRead, ID: fmt.Sprintf("memread-%s-%d", prefix, len(reads)),
			TS: now, Conversation: k.Conversation, User: k.User})
	}
	for chunk := range slices.Chunk(reads, 500) {
		if _, err := pub.PublishBatch(ctx, chunk); err != nil {
			t.Fatal(err)
		}
	}
	readsAt := time.Now()
	poll.UntilState(t, 30*time.Second, "ingest to apply the reads", func() (bool, string) { return memDrained(rdb, ks) })
	// The reads, not the 1-minute unread TTL, end the unread state.
	if eps != len(unread) {
		t.Errorf("peak: %d unread episodes in Redis, the oracle has %d", eps, len(unread))
	}
	after, err := redistest.Keys(ctx, rdb, prefix+":")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range after {
		if kind := memShort(prefix, k); kind == "ep" || kind == "badge" {
			t.Errorf("after the reads: unread state %s left", k)
		}
	}

	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: redistest.Addr()})
	defer insp.Close()
	// The queue empties, but for the stale reminders of episodes that are
	// not open, which wait until they come due (see memStaleTask).
	// Ingest deletes the tasks of read episodes after it applied the reads,
	// so the stale ones are those still there a second later.
	var (
		stale   map[string]memStaleTask
		changed time.Time
	)
	poll.UntilState(t, memQueueWait, "the reminder queue to empty", func() (bool, string) {
		q, err := insp.GetQueueInfo(queue)
		if err != nil {
			return false, err.Error()
		}
		prev := stale
		var others []string
		stale, others = memStale(t, insp, rdb, ks, queue)
		if len(prev) != len(stale) {
			changed = time.Now()
		}
		for id := range stale {
			if _, ok := prev[id]; !ok {
				changed = time.Now()
			}
		}
		if q.Pending+q.Active+q.Retry+q.Aggregating == 0 && len(others) == 0 && time.Since(changed) > time.Second {
			return true, ""
		}
		return false, fmt.Sprintf("%d pending, %d active, %d scheduled (%d stale), %d retry: %s",
			q.Pending, q.Active, q.Scheduled, len(stale), q.Retry, strings.Join(others[:min(5, len(others))], "; "))
	})
	queueEmpty := time.Now()
	if q, err := insp.GetQueueInfo(queue); err == nil && q.Archived > 0 {
		t.Errorf("%d reminders archived (failed for good)", q.Archived)
	}

	// One flush: every closed minute moved to Postgres, no counter left.
	poll.UntilState(t, 70*time.Second, "the flusher to move every counter minute", func() (bool, string) {
		for s := 0; s < memShards; s++ {
			for _, k := range []string{ks.CounterIndex(s), ks.SnapshotIndex(s)} {
				if n := rdb.ZCard(ctx, k).Val(); n > 0 {
					return false, fmt.Sprintf("%s holds %d", k, n)
				}
			}
		}
		return true, ""
	})
	flushed := time.Now()
	var rows64 int64
	if err := db.QueryRow(ctx, "SELECT count(*) FROM counters_minute").Scan(&rows64); err != nil || rows64 == 0 {
		t.Errorf("counters_minute holds %d rows (%v): the flush wrote nothing", rows64, err)
	}

	// Then the configured lifetimes run out. What may outlive the test:
	// the baseline's keys, the long-lived documented keys (memLongLived),
	// asynq's retained completed tasks with the queue's totals, and the
	// stale reminders with the scheduled set that holds them.
	q := keys.AsynqQueue(queue)
	classify := func(k string, completed map[string]time.Time) string {
		if _, ok := base[k]; ok {
			return "baseline"
		}
		if kind := memShort(prefix, k); kind != "" {
			if _, ok := memLongLived[kind]; ok {
				return kind
			}
			return ""
		}
		rest, ok := strings.CutPrefix(k, q)
		switch {
		case !ok:
			return ""
		case strings.HasPrefix(rest, "t:"):
			id := strings.TrimPrefix(rest, "t:")
			if _, ok := completed[id]; ok {
				return "asynq retained task"
			}
			if _, ok := stale[id]; ok {
				return "asynq stale task"
			}
		case rest == "completed", rest == "processed", rest == "failed",
			strings.HasPrefix(rest, "processed:"), strings.HasPrefix(rest, "failed:"):
			return "asynq totals and completed set"
		case rest == "scheduled" && len(stale) > 0:
			return "asynq totals and completed set"
		}
		return ""
	}
	var (
		end       memSnapshot
		completed map[string]time.Time
	)
	waitEnd := time.Now()
	deadline := readsAt.Add(memWait)
	for {
		end = memMeasure(t, rdb, prefix, queue)
		_, completed = memAsynqOwners(t, rdb, queue)
		left := map[string][]string{}
		for k := range end {
			if classify(k, completed) == "" {
				kind := memKind(rows, k)
				left[kind] = append(left[kind], k)
			}
		}
		trimmed := true
		for s := 0; s < memShards; s++ {
			trimmed = trimmed && end[ks.Stream(s)].typ == "stream" && rdb.XLen(ctx, ks.Stream(s)).Val() == 0
		}
		if len(left) == 0 && trimmed {
			break
		}
		if time.Now().After(deadline) {
			for kind, list := range left {
				sort.Strings(list)
				k := list[0]
				t.Errorf("leak? %d keys of %s still there %s after the reads, e.g. %s (TTL %s)",
					len(list), kind, time.Since(readsAt).Round(time.Second), k, end[k].ttl)
			}
			if !trimmed {
				t.Errorf("an event stream is not trimmed to 0 entries")
			}
			break
		}
		time.Sleep(time.Second)
	}
	settled := time.Now()

	// Every key left has a TTL or an owner, the long-lived ones within
	// their documented bound.
	if bad := memCheckBounded(t, rdb, rows, end, queue); len(bad) > 0 {
		memReportOffenders(t, "end", bad)
	}
	type agg struct {
		n int
		b int64
	}
	classes := map[string]*agg{}
	for k, v := range end {
		c := classify(k, completed)
		if classes[c] == nil {
			classes[c] = &agg{}
		}
		classes[c].n++
		classes[c].b += v.mem
		switch id := strings.TrimPrefix(k, q+"t:"); c {
		case "sent", "dau", "dauidx":
			if lim := memLongLived[c].maxTTL; v.ttl < 0 || v.ttl > lim {
				t.Errorf("end: %s has TTL %s, documented at most %s", k, v.ttl, lim)
			}
		case "asynq retained task":
			if completed[id].After(time.Now().Add(memRetention + time.Minute)) {
				t.Errorf("end: completed task %s retained until %s, beyond the 1 h retention", k, completed[id])
			}
		case "asynq stale task":
			if stale[id].due.After(time.Now().Add(memStaleMax)) {
				t.Errorf("end: stale reminder %s due %s, beyond %s", k, stale[id].due, memStaleMax)
			}
		}
	}
	for k := range base {
		if _, ok := end[k]; !ok {
			t.Errorf("end: baseline key %s is gone (an idle owner stopped?)", k)
		}
	}

	// Key count: the baseline's keys, plus the retained classes, each
	// bounded by what ran. One sent set per finished reminder stage
	// (sent, failed, cancelled or suppressed, as the worker counts them).
	// The worker finishes reminders that run; ingest's relay finishes
	// (cancels) those of episodes read before they ran.
	finished := 0
	for _, proc := range []string{"worker", "ingest"} {
		code, body := metricstest.Get(t, addrs[proc], "/metrics")
		if code != 200 {
			t.Fatalf("%s /metrics: %d", proc, code)
		}
		for _, o := range []string{"sent", "failed", "cancelled", "suppressed"} {
			for line := range strings.SplitSeq(body, "\n") {
				if strings.HasPrefix(line, `nudge_reminders_total{outcome="`+o+`"`) {
					v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
					finished += int(v)
				}
			}
		}
	}
	n := func(c string) int {
		if classes[c] == nil {
			return 0
		}
		return classes[c].n
	}
	if n("sent") != finished {
		t.Errorf("end: %d sent sets for %d finished reminders", n("sent"), finished)
	}
	// One retained task per task that ran (fewer: deleting the tasks of a
	// read episode deletes its completed ones too).
	if qi, err := insp.GetQueueInfo(queue); err != nil || n("asynq retained task") > qi.ProcessedTotal {
		t.Errorf("end: %d retained asynq tasks, more than the tasks processed (%v)", n("asynq retained task"), err)
	}
	if n("dau") > memShards || n("dauidx") > memShards || n("asynq totals and completed set") > 6 {
		t.Errorf("end: %d dau, %d dauidx, %d asynq queue keys: want at most one per shard (one app, one day) and 6",
			n("dau"), n("dauidx"), n("asynq totals and completed set"))
	}

	// Memory: the baseline's keys are the streams, the leases and the
	// members set. A stream trimmed to no entries is larger than a fresh
	// one by a constant: the radix trees of its group's and consumer's
	// pending lists, once used, do not shrink back (redis-cli: a stream
	// with a group and consumer takes 656 bytes fresh, 925 after 3,000
	// entries were read, acknowledged and trimmed, and still 925 after
	// three such rounds). So: at most 320 bytes more per stream and 64 per
	// other key (a lease's value, allocator rounding), whatever the
	// traffic.
	baseEndN, baseEndB := end.bytes(func(k string) bool { _, ok := base[k]; return ok })
	var slack int64
	for _, v := range base {
		if v.typ == "stream" {
			slack += 320
		} else {
			slack += 64
		}
	}
	if baseEndN != baseN || baseEndB > baseB+slack {
		t.Errorf("end: the baseline's keys: %d keys, %d bytes; at idle %d keys, %d bytes (+ slack %d)", baseEndN, baseEndB, baseN, baseB, slack)
	}
	pushes := sb.Stats().FCM.Delivered + sb.Stats().APNs.Delivered
	if pushes == 0 {
		t.Errorf("no push was delivered: the reminder path did not run")
	}

	endN, endB := end.bytes(nil)
	staleBy := map[string]int{}
	var lastDue time.Time
	for _, x := range stale {
		staleBy[x.kind]++
		if x.due.After(lastDue) {
			lastDue = x.due
		}
	}
	t.Logf("reads: %d; queue empty %s after them but for %d stale reminders %v, the last due in %s; flushed %s after them; settled %s after them",
		len(reads), queueEmpty.Sub(readsAt).Round(time.Millisecond), len(stale), staleBy, time.Until(lastDue).Round(time.Second), flushed.Sub(readsAt).Round(time.Millisecond),
		settled.Sub(readsAt).Round(time.Millisecond))
	t.Logf("pushes delivered: %d; reminders finished: %d", pushes, finished)
	var parts []string
	for _, c := range []string{"baseline", "sent", "dau", "dauidx", "asynq retained task", "asynq stale task", "asynq totals and completed set", ""} {
		if a := classes[c]; a != nil {
			parts = append(parts, fmt.Sprintf("%q %d/%dB", c, a.n, a.b))
		}
	}
	t.Logf("end: %d keys, %d bytes; by class: %s", endN, endB, strings.Join(parts, ", "))
	t.Logf("end by pattern: %s", memKinds(rows, end))
	for kind, l := range memLongLived {
		t.Logf("long-lived %s: %s", kind, l.why)
	}
	t.Logf("time: build %s, run %s (waited %s for the end state)", built.Sub(began).Round(time.Millisecond),
		time.Since(built).Round(time.Millisecond), settled.Sub(waitEnd).Round(time.Millisecond))
}

// memKinds summarizes a snapshot by documented pattern: count and bytes.
func memKinds(rows []memDocRow, s memSnapshot) string {
	type agg struct {
		n int
		b int64
	}
	by := map[string]*agg{}
	for k, v := range s {
		kind := memKind(rows, k)
		if by[kind] == nil {
			by[kind] = &agg{}
		}
		by[kind].n++
		by[kind].b += v.mem
	}
	kinds := make([]string, 0, len(by))
	for k := range by {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d/%dB", k, by[k].n, by[k].b))
	}
	return strings.Join(parts, ", ")
}
