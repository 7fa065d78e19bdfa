package chaos

// The pipeline both scenarios run, and the checks both make at its end.
//
// startPipeline builds the binaries, starts the push sandbox, the four
// processes (ingest-1, ingest-2, worker, flusher) and the traffic, which
// it records for the oracle; the scenario then does its own harm while
// the traffic flows (Run kills processes, RunRedisRestart restarts Redis)
// and calls finish, which waits for the pipeline to apply everything,
// stops it and checks the promises into the Report.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/loadgen"
	"github.com/nudgehq/nudge/internal/oracle"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push/sandbox"
	"github.com/nudgehq/nudge/schema"
)

// setup is what a scenario chooses of its pipeline.
type setup struct {
	name        string // of the scenario: names its consumers and event ids
	root        string // where the commands are built from
	redisAddr   string
	databaseURL string
	prefix      string
	dir         string // binaries, logs ("logs"), sandbox credentials
	events      int64
	rate        float64
	seed        uint64
	push        sandbox.Chaos // the push provider's failures
	// metrics gives each process a /metrics and /readyz port of its own
	// (pipeline.metricsAddr), and the traffic starts once all are ready.
	metrics bool
	// reminders runs the reminder checks (checkReminders): ingest keeps
	// presence 5 s, so that reminders put off while a user is online come
	// due within the run, and when ingest applied each entry is sampled.
	reminders bool
	log       *slog.Logger
}

// defaults fills the settings the scenarios share the defaults of.
func (s *setup) defaults() {
	if s.root == "" {
		s.root = "."
	}
	s.events = cmp.Or(s.events, 20_000)
	s.rate = cmp.Or(s.rate, 1000)
	s.seed = cmp.Or(s.seed, 1)
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// runDir returns dir, or else a new temporary directory and its removal.
func runDir(dir, pattern string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// pipeline is a running pipeline and its traffic.
type pipeline struct {
	setup
	db          *pgxpool.Pool
	rdb         *redis.Client
	ks          keys.Keyspace
	sb          *sandbox.Server
	insp        *asynq.Inspector
	queue       string              // the reminders' asynq queue
	names       []string            // of the processes, in start order
	procs       map[string]*process // by name
	metricsAddr map[string]string   // by process, with setup.metrics
	logs        string              // the processes' log directory

	gen             *loadgen.Runner
	record, entries bytes.Buffer // the events published, and their entry ids
	applied         *appliedLog  // when ingest applied each entry, with setup.reminders
	stopWatching    func()       // stops sampling applied, taking a last sample
	orphaned        orphans      // reminders active in a SIGKILLed worker

	closers []func() // in reverse order
}

// startPipeline starts the pipeline of s, and its traffic, whose end the
// returned channel reports. close stops everything, also after an error.
func startPipeline(ctx context.Context, s setup) (p *pipeline, trafficDone <-chan error, err error) {
	p = &pipeline{setup: s, ks: keys.New(s.prefix, 8), queue: s.prefix + "-reminders", orphaned: orphans{},
		names: []string{"ingest-1", "ingest-2", "worker", "flusher"}, logs: filepath.Join(s.dir, "logs"),
		stopWatching: func() {}}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.db, err = pgxpool.New(ctx, s.databaseURL); err != nil {
		return p, nil, err
	}
	p.closers = append(p.closers, p.db.Close)
	if _, err := schema.Up(ctx, p.db); err != nil {
		return p, nil, err
	}
	p.rdb = redis.NewClient(&redis.Options{Addr: s.redisAddr})
	p.closers = append(p.closers, func() { p.rdb.Close() })
	p.insp = asynq.NewInspector(asynq.RedisClientOpt{Addr: s.redisAddr})
	p.closers = append(p.closers, func() { p.insp.Close() })

	if p.sb, err = sandbox.Start(ctx, sandbox.Config{Chaos: s.push}); err != nil {
		return p, nil, err
	}
	p.closers = append(p.closers, func() { p.sb.Close() })
	creds := filepath.Join(s.dir, "sandbox")
	if err := p.sb.WriteCredentials(creds); err != nil {
		return p, nil, err
	}

	bin := filepath.Join(s.dir, "bin")
	s.log.Info("building")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/ingest", "./cmd/worker", "./cmd/flusher")
	build.Dir = s.root
	if out, err := build.CombinedOutput(); err != nil {
		return p, nil, fmt.Errorf("go build: %v\n%s", err, out)
	}

	common := []string{"NUDGE_PREFIX=" + s.prefix, "NUDGE_SHARDS=8", "NUDGE_DATABASE_URL=" + s.databaseURL,
		"NUDGE_REDIS_URL=redis://" + s.redisAddr + "/0", "NUDGE_REDIS_ADDR=" + s.redisAddr, "NUDGE_QUEUE=" + p.queue,
		"NUDGE_STAGES=" + stagesSetting(), "NUDGE_LOG_LEVEL=debug", "NUDGE_METRICS_ADDR=127.0.0.1:0"}
	var presence []string
	if s.reminders {
		presence = []string{"-presence-ttl", "5s"}
	}
	p.procs = map[string]*process{
		"ingest-1": {bin: "ingest", args: append([]string{"-consumer", s.name + "-1", "-claim-idle", "3s"}, presence...)},
		"ingest-2": {bin: "ingest", args: append([]string{"-consumer", s.name + "-2", "-claim-idle", "3s"}, presence...)},
		"worker": {bin: "worker", args: append([]string{"-delayed-check-interval", "200ms", "-digest-window", "-1s"},
			p.sb.WorkerArgs(creds)...)},
		"flusher": {bin: "flusher", args: []string{"-interval", "2s", "-grace", "1s"}},
	}
	p.closers = append(p.closers, func() {
		for _, n := range p.names {
			p.procs[n].stop() // a no-op for one not started
		}
	})
	p.metricsAddr = map[string]string{}
	for _, n := range p.names {
		proc := p.procs[n]
		if s.metrics {
			port, err := freeport.Port()
			if err != nil {
				return p, nil, err
			}
			p.metricsAddr[n] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			proc.args = append(proc.args, "-metrics-addr", p.metricsAddr[n])
		}
		proc.name, proc.path, proc.env, proc.logs = n, filepath.Join(bin, proc.bin), common, p.logs
		if err := proc.start(); err != nil {
			return p, nil, err
		}
	}
	if s.metrics {
		if err := waitFor(ctx, time.Minute, func() (bool, error) {
			for _, n := range p.names {
				if !ready(ctx, p.metricsAddr[n]) {
					return false, nil
				}
			}
			return true, nil
		}); err != nil {
			return p, nil, fmt.Errorf("pipeline not ready: %w", err)
		}
	}

	// Traffic, recorded for the oracle with the entry id of each event,
	// through a client that never re-sends a pipeline by itself: the
	// producer retries, and finds out what an attempt whose replies were
	// lost had added. Its pool is large so that go-redis does not stop
	// dialing (after PoolSize failed dials in a row it only probes once a
	// second) while Redis is down: the producer reads back what a failed
	// attempt added as soon as Redis is back. When ingest applied each
	// entry is watched meanwhile, for the reminder checks.
	pub := redis.NewClient(&redis.Options{Addr: s.redisAddr, MaxRetries: -1, PoolSize: 200})
	p.closers = append(p.closers, func() { pub.Close() })
	lcfg := loadgen.Config{
		Seed: s.seed, IDPrefix: s.name + strconv.FormatUint(s.seed, 10), Users: 400, Conversations: 150,
		ReadDelay: time.Second, ReadDelayMax: 5 * time.Second, DeviceFraction: 0.9, DuplicateRate: 0.05,
		Rate: s.rate, Total: s.events, Keyspace: p.ks, Record: &p.record, RecordIDs: &p.entries,
		PublishTimeout: time.Minute,
	}
	if s.reminders {
		// Users react to their pushes: opens (some reported twice, some
		// published twice) and reads that convert, under the same crashes.
		lcfg.PushFeed, lcfg.OpenRate, lcfg.PushReadRate = p.sb.ControlURL(), 0.4, 0.5
	}
	p.gen, err = loadgen.New(pub, lcfg)
	if err != nil {
		return p, nil, err
	}
	if s.reminders {
		p.applied, p.stopWatching = watchApplied(ctx, p.rdb, p.ks)
		p.closers = append(p.closers, p.stopWatching)
	}
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	p.closers = append(p.closers, stopTraffic)
	done := make(chan error, 1)
	go func() {
		_, err := p.gen.Run(trafficCtx)
		done <- err
	}()
	return p, done, nil
}

// close stops the traffic and the processes and releases the rest.
func (p *pipeline) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// finish checks the run once the traffic is done: it waits until ingest
// applied every entry, runs whileRunning (if not nil) with every process
// still up, stops the processes as their work is done and checks the
// promises into rep: Postgres totals and unread state against the oracle,
// no dead letters, no duplicate push, the reminders (checkReminders, with
// setup.reminders), no secret in the logs.
func (p *pipeline) finish(ctx context.Context, rep *Report, whileRunning func() error) error {
	// The oracle, from the events as published, in stream order per shard.
	// The secrets the logs must never show, the users' devices and
	// reminder delays are collected on the way.
	o := oracle.New(128)
	secrets := map[string]bool{}
	facts := &reminderFacts{delays: map[string]time.Duration{}, users: map[string]string{}, applied: p.applied}
	sc := bufio.NewScanner(&p.record)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	ids := bufio.NewScanner(&p.entries)
	for sc.Scan() {
		e, err := event.Decode(sc.Bytes())
		if err != nil {
			return fmt.Errorf("recorded event: %w", err)
		}
		if !ids.Scan() {
			return errors.New("recorded events: fewer entry ids than events")
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

	if err := waitFor(ctx, 3*time.Minute, func() (bool, error) { return drained(ctx, p.rdb, p.ks) }); err != nil {
		return fmt.Errorf("ingest did not catch up: %w\n%s", err, streamState(ctx, p.rdb, p.ks))
	}
	p.stopWatching()
	if whileRunning != nil {
		if err := whileRunning(); err != nil {
			return err
		}
	}
	// Stop the writers of counters, the worker once every reminder due by
	// now was taken (for the reminder checks), then let the flusher move
	// the last minute once it closes.
	p.procs["ingest-1"].stop()
	p.procs["ingest-2"].stop()
	if p.reminders {
		p.log.Info("waiting for the reminders due to be taken")
		if err := waitFor(ctx, 3*time.Minute, func() (bool, error) {
			facts.settled = time.Now()
			return remindersSettled(p.insp, p.queue, p.orphaned)
		}); err != nil {
			return fmt.Errorf("reminders did not settle: %w", err)
		}
	}
	p.procs["worker"].stop()
	if p.reminders {
		var err error
		if facts.queued, err = queuedReminders(p.insp, p.queue); err != nil {
			return err
		}
	}
	p.log.Info("waiting for the last minute to close and be flushed")
	if err := waitFor(ctx, 3*time.Minute, func() (bool, error) { return flushedAll(ctx, p.rdb, p.ks) }); err != nil {
		return fmt.Errorf("counters not flushed: %w", err)
	}
	p.procs["flusher"].stop()

	if err := checkState(ctx, rep, p.db, p.rdb, p.ks, o, p.sb); err != nil {
		return err
	}
	// Every episode unread past its due time pushed or finished for a
	// recorded reason; no push for an episode read before its due time.
	if p.reminders {
		if err := checkConversions(ctx, rep, p.db, p.rdb, p.ks, o.Episodes()); err != nil {
			return err
		}
		facts.deliveries = p.sb.Deliveries()
		if err := checkReminders(ctx, rep, p.rdb, p.ks, facts, p.log); err != nil {
			return err
		}
	}
	// Device tokens and message text never appear in the logs.
	leaks, err := scanLogs(p.logs, secrets)
	if err != nil {
		return err
	}
	for _, l := range leaks {
		rep.fail("log leak: %s", l)
	}
	return nil
}

// metrics are the ingest counters compared with the oracle.
var metrics = []string{"events_applied", "messages_sent", "recipients", "mentions", "reads",
	"episodes_opened", "episodes_closed", "presence_events", "device_events", "prefs_events", "duplicates",
	"opened_events", "reminders_opened"}
