// Package chaos runs the pipeline under crashes and provider failures and
// checks that its promises hold: every accepted event counted exactly once
// in Postgres, unread state equal to an independent oracle, no device
// pushed twice for one reminder, nothing left pending, and of reminders:
// every episode still unread past its due time pushed or finished for a
// recorded reason, no push for an episode read before its due time.
//
// It starts real ingest (two consumers), worker and flusher processes,
// publishes simulated traffic with producer retries (re-published ids), has
// the push sandbox fail a share of requests (5xx, 429 with Retry-After,
// unregistered tokens), and SIGKILLs and restarts a random process every
// few seconds while the traffic flows. cmd/chaos runs it from the command
// line; a short variant runs in the tests.
//
// The reminder checks (checkReminders) date each episode by the stream
// entry ids of the events that opened and closed it, and measure when
// ingest applied each entry by sampling the consumer group every 100 ms
// rather than assume a lag (a kill delays a shard by the 3 s claim idle
// time, and more). Once the traffic is applied, the worker runs until
// every first reminder due has been taken (orphans of a killed worker
// aside). Then each episode whose first reminder was due must show a
// push, an outcome recorded in its sent set (sent, failed, suppressed with
// a reason, or cancelled after the read that closed it), or a reminder
// still queued (put off, retrying, orphaned); and no push may be for an
// episode whose read was applied before the push's earliest due time. The
// one slack is workerSlack (10 s): a read published within it after the
// due time may delete the reminder before the worker starts it, so such
// episodes are not counted as due. Ingest keeps presence 5 s here, so that
// reminders put off while a user is online come due within the run.
package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/loadgen"
	"github.com/nudgehq/nudge/push/sandbox"
	"github.com/nudgehq/nudge/schema"
)

// Config configures a run. The zero value of each field means its default.
type Config struct {
	// Root is the repository root, where the commands are built from. Default ".".
	Root string
	// RedisAddr is the Redis to use. Default 127.0.0.1:6379.
	RedisAddr string
	// DatabaseURL is an empty database to use (migrated by the run). Required.
	DatabaseURL string
	// Prefix is the key prefix of the run; its keys are the run's own. Required.
	Prefix string
	// Events is how many events the traffic publishes. Default 20,000.
	Events int64
	// Rate is the traffic's events per second. Default 1,000.
	Rate float64
	// KillEvery is the time between two kills. Default 3s.
	KillEvery time.Duration
	// Seed makes the traffic and the kills repeatable. Default 1.
	Seed uint64
	// Dir holds the binaries and the logs. Default a temporary directory.
	Dir string
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// Report is what a run found.
type Report struct {
	Events     int64            // distinct events published
	Published  int64            // entries published, re-published copies included
	Kills      map[string]int   // SIGKILLs by process
	Totals     map[string]int64 // Postgres totals by metric
	Expected   map[string]int64 // the oracle's totals by metric
	Pushes     int              // deliveries the sandbox accepted
	Duplicates int              // reminders a device got more than once
	Unread     int              // (user, conversation) pairs with unread messages

	// Episodes still unread when their first reminder was due, and what
	// became of that reminder (see checkReminders).
	EpisodesDue         int
	EpisodesPushed      int // pushed
	EpisodesFailed      int // pushed, but no device accepted it
	EpisodesSuppressed  int // suppressed for a recorded reason (muted, mentions only, no devices, digested)
	EpisodesCancelled   int // read after the due time, before the worker got to the reminder
	EpisodesQueued      int // still queued: put off (online, quiet hours, rate limit), retrying, or orphaned by a kill
	EpisodesUnaccounted int // none of these: a broken promise
	// ReadBeforeDue counts pushes for an episode read before the push's
	// earliest due time: a broken promise. ReadMargin is the least time
	// from that due time to the read, over pushed episodes that were read.
	ReadBeforeDue int
	ReadMargin    time.Duration

	Failures []string // broken promises; empty when the run passed
	Elapsed  time.Duration
}

// Passed reports whether every promise held.
func (r Report) Passed() bool { return len(r.Failures) == 0 }

func (r *Report) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// metrics are the ingest counters compared with the oracle.
var metrics = []string{"events_applied", "messages_sent", "recipients", "mentions", "reads",
	"episodes_opened", "episodes_closed", "presence_events", "device_events", "prefs_events", "duplicates"}

// Run runs the scenario and checks it. An error means the run could not be
// carried out; broken promises are in the Report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	start := time.Now()
	if cfg.Root == "" {
		cfg.Root = "."
	}
	if cfg.RedisAddr == "" {
		cfg.RedisAddr = "127.0.0.1:6379"
	}
	if cfg.Events == 0 {
		cfg.Events = 20_000
	}
	if cfg.Rate == 0 {
		cfg.Rate = 1000
	}
	if cfg.KillEvery == 0 {
		cfg.KillEvery = 3 * time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.DatabaseURL == "" || cfg.Prefix == "" {
		return Report{}, errors.New("chaos: DatabaseURL and Prefix are required")
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "nudge-chaos")
		if err != nil {
			return Report{}, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	log := cfg.Logger
	rep := Report{Kills: map[string]int{}}

	db, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return rep, err
	}
	defer db.Close()
	if _, err := schema.Up(ctx, db); err != nil {
		return rep, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr})
	defer rdb.Close()
	ks := keys.New(cfg.Prefix, 8)

	sb, err := sandbox.Start(ctx, sandbox.Config{Chaos: sandbox.Chaos{Seed: cfg.Seed, ServerError: 0.05, RateLimited: 0.02,
		Unregistered: 0.01, RetryAfterSeconds: 1}})
	if err != nil {
		return rep, err
	}
	defer sb.Close()
	creds := filepath.Join(cfg.Dir, "sandbox")
	if err := sb.WriteCredentials(creds); err != nil {
		return rep, err
	}

	bin := filepath.Join(cfg.Dir, "bin")
	log.Info("building")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/ingest", "./cmd/worker", "./cmd/flusher")
	build.Dir = cfg.Root
	if out, err := build.CombinedOutput(); err != nil {
		return rep, fmt.Errorf("go build: %v\n%s", err, out)
	}
	c := sb.Credentials()
	queue := cfg.Prefix + "-reminders"
	common := []string{"NUDGE_PREFIX=" + cfg.Prefix, "NUDGE_SHARDS=8", "NUDGE_DATABASE_URL=" + cfg.DatabaseURL,
		"NUDGE_REDIS_URL=redis://" + cfg.RedisAddr + "/0", "NUDGE_REDIS_ADDR=" + cfg.RedisAddr, "NUDGE_QUEUE=" + queue,
		"NUDGE_STAGES=" + stagesSetting(), "NUDGE_LOG_LEVEL=debug", "NUDGE_METRICS_ADDR=127.0.0.1:0"}
	procs := map[string]*process{
		"ingest-1": {bin: "ingest", args: []string{"-consumer", "chaos-1", "-claim-idle", "3s", "-presence-ttl", "5s"}},
		"ingest-2": {bin: "ingest", args: []string{"-consumer", "chaos-2", "-claim-idle", "3s", "-presence-ttl", "5s"}},
		"worker": {bin: "worker", args: []string{"-delayed-check-interval", "200ms", "-digest-window", "-1s",
			"-fcm-credentials-file", filepath.Join(creds, sandbox.ServiceAccountFile), "-fcm-endpoint", c.FCMEndpoint,
			"-apns-key-file", filepath.Join(creds, sandbox.APNsKeyFile), "-apns-key-id", c.APNsKeyID,
			"-apns-team-id", c.APNsTeamID, "-apns-topic", c.APNsTopic, "-apns-host", c.APNsHost,
			"-apns-ca-file", filepath.Join(creds, sandbox.CACertFile)}},
		"flusher": {bin: "flusher", args: []string{"-interval", "2s", "-grace", "1s"}},
	}
	names := []string{"ingest-1", "ingest-2", "worker", "flusher"}
	for _, n := range names {
		p := procs[n]
		p.name, p.path, p.env, p.logs = n, filepath.Join(bin, p.bin), common, filepath.Join(cfg.Dir, "logs")
		if err := p.start(); err != nil {
			return rep, err
		}
	}
	defer func() {
		for _, n := range names {
			procs[n].stop()
		}
	}()

	// Traffic, recorded for the oracle with the entry id of each event.
	// When ingest applied each entry is watched meanwhile.
	var record, entries bytes.Buffer
	gen, err := loadgen.New(rdb, loadgen.Config{
		Seed: cfg.Seed, IDPrefix: "chaos" + strconv.FormatUint(cfg.Seed, 10), Users: 400, Conversations: 150,
		ReadDelay: time.Second, ReadDelayMax: 5 * time.Second, DeviceFraction: 0.9, DuplicateRate: 0.05,
		Rate: cfg.Rate, Total: cfg.Events, Keyspace: ks, Record: &record, RecordIDs: &entries,
	})
	if err != nil {
		return rep, err
	}
	applied, stopWatching := watchApplied(ctx, rdb, ks)
	defer stopWatching()
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: cfg.RedisAddr})
	defer insp.Close()
	orphaned := orphans{}
	trafficDone := make(chan error, 1)
	go func() {
		_, err := gen.Run(ctx)
		trafficDone <- err
	}()

	// Kill a process every KillEvery while the traffic flows, each of them
	// once per round, in a random order.
	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	var order []string
	tick := time.NewTicker(cfg.KillEvery)
kills:
	for {
		select {
		case err := <-trafficDone:
			if err != nil {
				tick.Stop()
				return rep, fmt.Errorf("traffic: %w", err)
			}
			break kills
		case <-ctx.Done():
			tick.Stop()
			return rep, ctx.Err()
		case <-tick.C:
			if len(order) == 0 {
				order = append(order, names...)
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			}
			victim := order[0]
			order = order[1:]
			log.Info("SIGKILL", "process", victim)
			if err := procs[victim].kill(); err != nil {
				return rep, err
			}
			if victim == "worker" {
				if err := orphaned.add(insp, queue); err != nil {
					return rep, err
				}
			}
			rep.Kills[victim]++
			if err := procs[victim].start(); err != nil {
				return rep, err
			}
		}
	}
	tick.Stop()
	log.Info("traffic done; waiting for ingest to catch up", "kills", rep.Kills)

	// The oracle, from the events as published, in stream order per shard.
	// The secrets the logs must never show, the users' devices and
	// reminder delays are collected on the way.
	o := oracle.New(128)
	secrets := map[string]bool{}
	facts := &reminderFacts{delays: map[string]time.Duration{}, users: map[string]string{}, applied: applied}
	sc := bufio.NewScanner(&record)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	ids := bufio.NewScanner(&entries)
	for sc.Scan() {
		e, err := event.Decode(sc.Bytes())
		if err != nil {
			return rep, fmt.Errorf("recorded event: %w", err)
		}
		if !ids.Scan() {
			return rep, errors.New("recorded events: fewer entry ids than events")
		}
		rep.Published++
		o.ApplyEntry(e, ids.Text())
		switch {
		case e.Type == event.TypeDeviceRegistered:
			facts.users[e.Token] = e.User
		case e.Type == event.TypePrefs && e.ReminderDelayS != nil:
			facts.delays[e.User] = time.Duration(*e.ReminderDelayS) * time.Second
		}
		if e.Token != "" {
			secrets[e.Token] = true
		}
		if len(e.Preview) >= 12 {
			secrets[e.Preview] = true
		}
	}
	rep.Expected = o.Counts()
	rep.Events = rep.Expected["events_applied"]
	facts.episodes = o.Episodes()

	if err := waitFor(ctx, 3*time.Minute, func() (bool, error) { return drained(ctx, rdb, ks) }); err != nil {
		return rep, fmt.Errorf("ingest did not catch up: %w", err)
	}
	stopWatching()
	// Stop the writers of counters, the worker once every reminder due by
	// now was taken, then let the flusher move the last minute once it
	// closes.
	procs["ingest-1"].stop()
	procs["ingest-2"].stop()
	log.Info("waiting for the reminders due to be taken")
	if err := waitFor(ctx, 3*time.Minute, func() (bool, error) {
		facts.settled = time.Now()
		return remindersSettled(insp, queue, orphaned)
	}); err != nil {
		return rep, fmt.Errorf("reminders did not settle: %w", err)
	}
	procs["worker"].stop()
	if facts.queued, err = queuedReminders(insp, queue); err != nil {
		return rep, err
	}
	log.Info("waiting for the last minute to close and be flushed")
	if err := waitFor(ctx, 3*time.Minute, func() (bool, error) { return flushedAll(ctx, rdb, ks) }); err != nil {
		return rep, fmt.Errorf("counters not flushed: %w", err)
	}
	procs["flusher"].stop()

	rep.Totals = map[string]int64{}
	rows, err := db.Query(ctx, "SELECT metric, sum(value)::bigint FROM counters_minute GROUP BY metric")
	if err != nil {
		return rep, err
	}
	for rows.Next() {
		var m string
		var n int64
		if err := rows.Scan(&m, &n); err != nil {
			rows.Close()
			return rep, err
		}
		rep.Totals[m] = n
	}
	rows.Close()
	for _, m := range metrics {
		if rep.Totals[m] != rep.Expected[m] {
			rep.fail("%s: %d in Postgres, %d expected", m, rep.Totals[m], rep.Expected[m])
		}
	}

	// Unread state against the oracle, both ways.
	want := o.Unread()
	rep.Unread = len(want)
	for k, n := range want {
		got, err := rdb.HGet(ctx, ks.Episode(ks.Shard(k.Conversation), k.User, k.Conversation), "n").Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return rep, err
		}
		if got != n {
			rep.fail("unread of %s in %s: %d, oracle %d", k.User, k.Conversation, got, n)
		}
	}
	for s := 0; s < ks.Shards; s++ {
		iter := rdb.Scan(ctx, 0, ks.Episode(s, "*", "*"), 1000).Iterator()
		extra := 0
		for iter.Next(ctx) {
			key := iter.Val()
			_, rest, _ := strings.Cut(key, ":ep:")
			conv, user, _ := strings.Cut(rest, "|")
			if _, ok := want[oracle.Key{User: user, Conversation: conv}]; !ok {
				extra++
			}
		}
		if extra > 0 {
			rep.fail("shard %d: %d unread episodes the oracle does not have", s, extra)
		}
	}

	// Dead letters: the traffic had no bad input.
	for s := 0; s < ks.Shards; s++ {
		if n := rdb.XLen(ctx, ks.DeadLetter(s)).Val(); n > 0 {
			rep.fail("shard %d: %d dead letters", s, n)
		}
	}

	// Never two pushes to a device for one reminder.
	seen := map[string]int{}
	for _, d := range sb.Deliveries() {
		rep.Pushes++
		seen[d.Token+"|"+d.Data["conversation_id"]+"|"+d.Data["episode"]+"|"+d.Data["stage"]]++
	}
	for k, n := range seen {
		if n > 1 {
			rep.Duplicates++
			if rep.Duplicates <= 5 {
				rep.fail("device got reminder %s %d times", k, n)
			}
		}
	}
	if rep.Pushes == 0 {
		rep.fail("no push was delivered")
	}

	// Every episode unread past its due time pushed or finished for a
	// recorded reason; no push for an episode read before its due time.
	facts.deliveries = sb.Deliveries()
	if err := checkReminders(ctx, &rep, rdb, ks, facts, log); err != nil {
		return rep, err
	}

	// Device tokens and message text never appear in the logs.
	leaks, err := scanLogs(filepath.Join(cfg.Dir, "logs"), secrets)
	if err != nil {
		return rep, err
	}
	for _, l := range leaks {
		rep.fail("log leak: %s", l)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// scanLogs returns where a secret (a device token, a message preview)
// appears in a log file.
func scanLogs(dir string, secrets map[string]bool) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no logs to scan in %s", dir)
	}
	var leaks []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				leaks = append(leaks, fmt.Sprintf("%s holds %q", filepath.Base(f), s[:min(len(s), 12)]+"…"))
				if len(leaks) >= 5 {
					return leaks, nil
				}
			}
		}
	}
	return leaks, nil
}

// drained reports whether every shard's entries were read and applied.
func drained(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) (bool, error) {
	for s := 0; s < ks.Shards; s++ {
		info, err := rdb.XInfoStream(ctx, ks.Stream(s)).Result()
		if err != nil {
			return false, err
		}
		groups, err := rdb.XInfoGroups(ctx, ks.Stream(s)).Result()
		if err != nil {
			return false, err
		}
		for _, g := range groups {
			if g.Pending > 0 || g.LastDeliveredID != info.LastGeneratedID {
				return false, nil
			}
		}
	}
	return true, nil
}

// flushedAll reports whether no counter and no snapshot is left in Redis.
func flushedAll(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) (bool, error) {
	for s := 0; s < ks.Shards; s++ {
		for _, k := range []string{ks.CounterIndex(s), ks.SnapshotIndex(s)} {
			n, err := rdb.ZCard(ctx, k).Result()
			if err != nil {
				return false, err
			}
			if n > 0 {
				return false, nil
			}
		}
	}
	return true, nil
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// process is one of the pipeline's processes, restartable.
type process struct {
	name, bin, path, logs string
	args, env             []string
	cmd                   *exec.Cmd
	done                  chan struct{}
}

func (p *process) start() error {
	if err := os.MkdirAll(p.logs, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(p.logs, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return nil
}

func (p *process) kill() error {
	if p.cmd == nil {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.done
	p.cmd = nil
	return nil
}

// stop ends the process with SIGTERM, or SIGKILL after 30s.
func (p *process) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}
