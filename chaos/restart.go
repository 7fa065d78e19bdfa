package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// RedisPersistence is the persistence deploy/README.md ("Redis
// persistence") requires, as redis.conf lines: RunRedisRestart runs its
// Redis with exactly these (and no RDB snapshots, so the AOF alone
// carries the data across the restarts).
var RedisPersistence = []string{
	"appendonly yes",
	"appendfsync everysec",
	"maxmemory 1gb",
	"maxmemory-policy noeviction",
	`save ""`,
}

// RestartConfig configures RunRedisRestart. The zero value of each field
// means its default.
type RestartConfig struct {
	// Root is the repository root, where the commands are built from. Default ".".
	Root string
	// RedisServer is the redis-server binary. Default "redis-server" on the PATH.
	RedisServer string
	// DatabaseURL is an empty database to use (migrated by the run). Required.
	DatabaseURL string
	// Prefix is the key prefix of the run. Default "restart".
	Prefix string
	// Events is how many entries the traffic publishes. Default 20,000.
	Events int64
	// Rate is the traffic's entries per second. Default 1,000.
	Rate float64
	// Restarts is how many times Redis is stopped and started again while
	// the traffic flows, evenly spread over it. Default 2.
	Restarts int
	// Pauses are how long Redis stays stopped before it starts again,
	// restart by restart, the last one repeated. The ingest leases last
	// 3 s (-claim-idle): a longer pause lets them expire while Redis is
	// down, so the consumers take shards over from each other when it is
	// back. Default 1.5 s.
	Pauses []time.Duration
	// Crash stops Redis with SIGKILL instead of SIGTERM: a crash of the
	// Redis process, the machine staying up (what the AOF has written to
	// the kernel survives; see deploy/README.md).
	Crash bool
	// RecoverWithin is how long every binary has, after Redis answers
	// again, to show it works again. Default 30s.
	RecoverWithin time.Duration
	// Seed makes the traffic repeatable. Default 1.
	Seed uint64
	// Dir holds Redis's data, the binaries and the logs. Default a
	// temporary directory.
	Dir string
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// Outage is one stop and start of Redis.
type Outage struct {
	// At is how many entries the traffic had published when Redis was stopped.
	At int64
	// Stop is from the signal until the server exited (after SIGTERM, its
	// AOF written).
	Stop time.Duration
	// Down is from the signal until the restarted server answered PING.
	Down time.Duration
	// Recovered is from then until every binary was ready and working
	// again (ingest applying, flusher flushing, worker pushing); zero if
	// one did not within RecoverWithin.
	Recovered time.Duration
	// Slowest is the binary that recovered last.
	Slowest string
}

// RestartReport is what a Redis restart run found. Report.Kills stays empty:
// no process is killed on purpose.
type RestartReport struct {
	Report
	// Redis is the server's version and persistence settings.
	Redis     string
	Outages   []Outage
	Exits     map[string]int // exits of pipeline processes on their own, by process (restarted each time)
	Retries   int64          // producer attempts that failed and were retried
	Recovered int64          // entries a failed producer attempt had added, found without publishing them again
	// AfterLastRestart counts the entries published after Redis came back
	// the last time, and PushesAfterLastRestart the deliveries since.
	AfterLastRestart       int64
	PushesAfterLastRestart int
}

// RunRedisRestart runs the pipeline against a Redis of its own and stops
// and starts that Redis while the traffic flows (SIGTERM: a clean shutdown
// that writes the AOF, then a start on the same port and data after a
// pause). It checks that no process exits, that every binary reconnects
// and works again by itself, and then the promises Run checks: exact
// totals, unread state, no duplicate push, nothing pending, no dead
// letters, no asynq task archived. An error means the run could not be
// carried out; broken promises are in the report.
func RunRedisRestart(ctx context.Context, cfg RestartConfig) (RestartReport, error) {
	start := time.Now()
	if cfg.Root == "" {
		cfg.Root = "."
	}
	if cfg.RedisServer == "" {
		cfg.RedisServer = "redis-server"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "restart"
	}
	if cfg.Events == 0 {
		cfg.Events = 20_000
	}
	if cfg.Rate == 0 {
		cfg.Rate = 1000
	}
	if cfg.Restarts == 0 {
		cfg.Restarts = 2
	}
	if len(cfg.Pauses) == 0 {
		cfg.Pauses = []time.Duration{1500 * time.Millisecond}
	}
	if cfg.RecoverWithin == 0 {
		cfg.RecoverWithin = 30 * time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	rep := RestartReport{Report: Report{Kills: map[string]int{}}, Exits: map[string]int{}}
	if cfg.DatabaseURL == "" {
		return rep, errors.New("chaos: DatabaseURL is required")
	}
	if cfg.Restarts < 0 || slices.ContainsFunc(cfg.Pauses, func(d time.Duration) bool { return d < 0 }) {
		return rep, errors.New("chaos: Restarts and Pauses must not be negative")
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "nudge-restart")
		if err != nil {
			return rep, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	log := cfg.Logger

	srv, err := startRedis(ctx, cfg.RedisServer, filepath.Join(cfg.Dir, "redis"))
	if err != nil {
		return rep, err
	}
	defer srv.kill()
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return rep, err
	}
	rep.Redis = "redis " + infoField(info, "redis_version") + ", " + strings.Join(RedisPersistence, ", ")
	log.Info("redis started", "addr", srv.addr, "config", rep.Redis)

	db, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return rep, err
	}
	defer db.Close()
	if _, err := schema.Up(ctx, db); err != nil {
		return rep, err
	}
	ks := keys.New(cfg.Prefix, 8)

	// A well-behaved push provider: any failure of a reminder is Redis's.
	sb, err := sandbox.Start(ctx, sandbox.Config{})
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
		"NUDGE_REDIS_URL=redis://" + srv.addr + "/0", "NUDGE_REDIS_ADDR=" + srv.addr, "NUDGE_QUEUE=" + queue,
		"NUDGE_STAGES=2s,4s", "NUDGE_LOG_LEVEL=debug"}
	procs := map[string]*process{
		"ingest-1": {bin: "ingest", args: []string{"-consumer", "restart-1", "-claim-idle", "3s"}},
		"ingest-2": {bin: "ingest", args: []string{"-consumer", "restart-2", "-claim-idle", "3s"}},
		"worker": {bin: "worker", args: []string{"-delayed-check-interval", "200ms", "-digest-window", "-1s",
			"-fcm-credentials-file", filepath.Join(creds, sandbox.ServiceAccountFile), "-fcm-endpoint", c.FCMEndpoint,
			"-apns-key-file", filepath.Join(creds, sandbox.APNsKeyFile), "-apns-key-id", c.APNsKeyID,
			"-apns-team-id", c.APNsTeamID, "-apns-topic", c.APNsTopic, "-apns-host", c.APNsHost,
			"-apns-ca-file", filepath.Join(creds, sandbox.CACertFile)}},
		"flusher": {bin: "flusher", args: []string{"-interval", "2s", "-grace", "1s"}},
	}
	names := []string{"ingest-1", "ingest-2", "worker", "flusher"}
	defer func() {
		for _, n := range names {
			procs[n].stop() // a no-op for one not started
		}
	}()
	metricsAddr := map[string]string{}
	for _, n := range names {
		port, err := freePort(ctx)
		if err != nil {
			return rep, err
		}
		metricsAddr[n] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p := procs[n]
		p.args = append(p.args, "-metrics-addr", metricsAddr[n])
		p.name, p.path, p.env, p.logs = n, filepath.Join(bin, p.bin), common, filepath.Join(cfg.Dir, "logs")
		if err := p.start(); err != nil {
			return rep, err
		}
	}
	if err := waitFor(ctx, time.Minute, func() (bool, error) {
		for _, n := range names {
			if !ready(ctx, metricsAddr[n]) {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return rep, fmt.Errorf("pipeline not ready: %w", err)
	}

	// Traffic, recorded for the oracle, through a client that never
	// re-sends a pipeline by itself: the producer retries, and finds out
	// what an attempt whose replies were lost had added.
	// Its pool is large so that go-redis does not stop dialing (after
	// PoolSize failed dials in a row it only probes once a second) while
	// Redis is down: the producer reads back what a failed attempt added
	// as soon as Redis is back.
	pub := redis.NewClient(&redis.Options{Addr: srv.addr, MaxRetries: -1, PoolSize: 200})
	defer pub.Close()
	var record bytes.Buffer
	gen, err := loadgen.New(pub, loadgen.Config{
		Seed: cfg.Seed, IDPrefix: "restart" + strconv.FormatUint(cfg.Seed, 10), Users: 400, Conversations: 150,
		ReadDelay: time.Second, ReadDelayMax: 5 * time.Second, DeviceFraction: 0.9, DuplicateRate: 0.05,
		Rate: cfg.Rate, Total: cfg.Events, Keyspace: ks, Record: &record,
		PublishTimeout: time.Minute,
	})
	if err != nil {
		return rep, err
	}
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	trafficDone := make(chan error, 1)
	go func() {
		_, err := gen.Run(trafficCtx)
		trafficDone <- err
	}()

	// While the traffic flows: restart Redis each time another share of
	// it is published, once every binary recovered from the last restart;
	// restart a process that exits, as a supervisor would, and count it.
	var (
		rec        *recovery
		lastBack   time.Time
		lastAt     int64
		lastPushes int
		traffic    = true
	)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for traffic || rec != nil {
		select {
		case err := <-trafficDone:
			if err != nil {
				return rep, fmt.Errorf("traffic: %w", err)
			}
			traffic = false
			trafficDone = nil
			log.Info("traffic done", "stats", gen.Stats().Events)
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-tick.C:
		}
		for _, n := range names {
			p := procs[n]
			select {
			case <-p.done:
			default:
				continue
			}
			rep.Exits[n]++
			log.Error("process exited on its own; restarting it", "process", n, "status", p.cmd.ProcessState.String(),
				"log", tail(filepath.Join(p.logs, n+".log"), 5))
			p.cmd = nil
			time.Sleep(time.Second)
			if err := p.start(); err != nil {
				return rep, err
			}
		}
		if rec != nil {
			if rec.poll(ctx, metricsAddr, len(sb.Deliveries())) {
				o := &rep.Outages[len(rep.Outages)-1]
				o.Recovered, o.Slowest = rec.slowest()
				log.Info("every binary recovered", "in", o.Recovered.Round(time.Millisecond), "slowest", o.Slowest)
				rec = nil
			} else if time.Since(rec.back) > cfg.RecoverWithin {
				rep.fail("restart %d: %s did not work again within %s of Redis coming back", len(rep.Outages),
					strings.Join(rec.missing(names), ", "), cfg.RecoverWithin)
				rec = nil
			}
			continue
		}
		k := len(rep.Outages)
		if !traffic || k >= cfg.Restarts || gen.Stats().Events-gen.Stats().Setup < cfg.Events*int64(k+1)/int64(cfg.Restarts+1) {
			continue
		}
		o := Outage{At: gen.Stats().Events}
		sig := syscall.SIGTERM
		if cfg.Crash {
			sig = syscall.SIGKILL
		}
		log.Info("stopping redis", "signal", sig, "restart", k+1, "published", o.At)
		signalled := time.Now()
		if err := srv.stop(sig, 30*time.Second); err != nil {
			return rep, err
		}
		o.Stop = time.Since(signalled)
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(cfg.Pauses[min(k, len(cfg.Pauses)-1)]):
		}
		if err := srv.start(ctx); err != nil {
			return rep, err
		}
		back := time.Now()
		o.Down = back.Sub(signalled)
		rep.Outages = append(rep.Outages, o)
		log.Info("redis is back", "restart", k+1, "down", o.Down.Round(time.Millisecond), "shutdown", o.Stop.Round(time.Millisecond))
		rec = newRecovery(ctx, back, metricsAddr, len(sb.Deliveries()))
		lastBack, lastAt, lastPushes = back, gen.Stats().Events, len(sb.Deliveries())
	}
	stopTraffic()
	st := gen.Stats()
	rep.Retries, rep.Recovered = st.Retries, st.Recovered
	if len(rep.Outages) < cfg.Restarts {
		rep.fail("Redis was restarted %d times while the traffic flowed, want %d", len(rep.Outages), cfg.Restarts)
	}
	log.Info("traffic done; waiting for ingest to catch up", "outages", len(rep.Outages), "retries", st.Retries, "recovered", st.Recovered)

	// The oracle, from the events as published.
	o := oracle.New(128)
	secrets := map[string]bool{}
	sc := bufio.NewScanner(&record)
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for sc.Scan() {
		e, err := event.Decode(sc.Bytes())
		if err != nil {
			return rep, fmt.Errorf("recorded event: %w", err)
		}
		rep.Published++
		o.Apply(e)
		if e.Token != "" {
			secrets[e.Token] = true
		}
		if len(e.Preview) >= 12 {
			secrets[e.Preview] = true
		}
	}
	rep.Expected = o.Counts()
	rep.Events = rep.Expected["events_applied"]
	if !lastBack.IsZero() {
		rep.AfterLastRestart = rep.Published - lastAt
		if rep.AfterLastRestart <= 0 {
			rep.fail("no entry was published after the last restart")
		}
	}

	if err := waitFor(ctx, 3*time.Minute, func() (bool, error) { return drained(ctx, rdb, ks) }); err != nil {
		return rep, fmt.Errorf("ingest did not catch up: %w\n%s", err, streamState(ctx, rdb, ks))
	}
	// Reminders due now run; those deferred (quiet hours) stay scheduled.
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: srv.addr})
	defer insp.Close()
	var qi *asynq.QueueInfo
	if err := waitFor(ctx, time.Minute, func() (bool, error) {
		qi, err = insp.GetQueueInfo(queue)
		if err != nil {
			return false, err
		}
		return qi.Pending+qi.Active+qi.Retry == 0, nil
	}); err != nil {
		rep.fail("reminders still pending: %v (%+v)", err, qi)
	} else if qi.Archived > 0 {
		rep.fail("%d reminders archived (failed for good)", qi.Archived)
	}
	rep.PushesAfterLastRestart = len(sb.Deliveries()) - lastPushes
	if !lastBack.IsZero() && rep.PushesAfterLastRestart == 0 {
		rep.fail("no push after the last restart")
	}
	for _, n := range names {
		select {
		case <-procs[n].done:
			rep.Exits[n]++
			log.Error("process exited on its own", "process", n, "status", procs[n].cmd.ProcessState.String())
		default:
		}
	}
	for _, n := range names {
		if rep.Exits[n] > 0 {
			rep.fail("%s exited %d times on its own", n, rep.Exits[n])
		}
	}

	// Stop the writers of counters, then let the flusher move the last
	// minute once it closes.
	for _, n := range []string{"ingest-1", "ingest-2", "worker"} {
		procs[n].stop()
	}
	log.Info("waiting for the last minute to close and be flushed")
	if err := waitFor(ctx, 3*time.Minute, func() (bool, error) { return flushedAll(ctx, rdb, ks) }); err != nil {
		return rep, fmt.Errorf("counters not flushed: %w", err)
	}
	procs["flusher"].stop()

	if err := checkState(ctx, &rep.Report, db, rdb, ks, o, sb); err != nil {
		return rep, err
	}
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

// checkState compares Postgres totals and unread state with the oracle and
// checks dead letters and duplicate pushes, as Run does.
func checkState(ctx context.Context, rep *Report, db *pgxpool.Pool, rdb *redis.Client, ks keys.Keyspace,
	o *oracle.Oracle, sb *sandbox.Server) error {
	rep.Totals = map[string]int64{}
	rows, err := db.Query(ctx, "SELECT metric, sum(value)::bigint FROM counters_minute GROUP BY metric")
	if err != nil {
		return err
	}
	for rows.Next() {
		var m string
		var n int64
		if err := rows.Scan(&m, &n); err != nil {
			rows.Close()
			return err
		}
		rep.Totals[m] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range metrics {
		if rep.Totals[m] != rep.Expected[m] {
			rep.fail("%s: %d in Postgres, %d expected", m, rep.Totals[m], rep.Expected[m])
		}
	}

	want := o.Unread()
	rep.Unread = len(want)
	for k, n := range want {
		got, err := rdb.HGet(ctx, ks.Episode(ks.Shard(k.Conversation), k.User, k.Conversation), "n").Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if got != n {
			rep.fail("unread of %s in %s: %d, oracle %d", k.User, k.Conversation, got, n)
		}
	}
	for s := 0; s < ks.Shards; s++ {
		iter := rdb.Scan(ctx, 0, ks.Episode(s, "*", "*"), 1000).Iterator()
		extra := 0
		for iter.Next(ctx) {
			_, rest, _ := strings.Cut(iter.Val(), ":ep:")
			conv, user, _ := strings.Cut(rest, "|")
			if _, ok := want[oracle.Key{User: user, Conversation: conv}]; !ok {
				extra++
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if extra > 0 {
			rep.fail("shard %d: %d unread episodes the oracle does not have", s, extra)
		}
		if n := rdb.XLen(ctx, ks.DeadLetter(s)).Val(); n > 0 {
			rep.fail("shard %d: %d dead letters", s, n)
		}
	}

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
	return nil
}

// streamState describes the shards' streams, consumer group, consumers
// and leases, for a run that did not drain.
func streamState(ctx context.Context, rdb *redis.Client, ks keys.Keyspace) string {
	var b strings.Builder
	members, _ := rdb.ZRangeWithScores(ctx, ks.Members(), 0, -1).Result()
	fmt.Fprintf(&b, "members %v (now %d)\n", members, time.Now().UnixMilli())
	for s := 0; s < ks.Shards; s++ {
		info, err := rdb.XInfoStream(ctx, ks.Stream(s)).Result()
		if err != nil {
			fmt.Fprintf(&b, "shard %d: %v\n", s, err)
			continue
		}
		lease, _ := rdb.Get(ctx, ks.Lease(s)).Result()
		ttl, _ := rdb.PTTL(ctx, ks.Lease(s)).Result()
		fmt.Fprintf(&b, "shard %d: length %d, last generated %s, lease %q (%s)\n", s, info.Length, info.LastGeneratedID, lease, ttl)
		groups, _ := rdb.XInfoGroups(ctx, ks.Stream(s)).Result()
		for _, g := range groups {
			fmt.Fprintf(&b, "  group %s: pending %d, last delivered %s, lag %d\n", g.Name, g.Pending, g.LastDeliveredID, g.Lag)
			consumers, _ := rdb.XInfoConsumers(ctx, ks.Stream(s), g.Name).Result()
			for _, c := range consumers {
				fmt.Fprintf(&b, "    consumer %s: pending %d, idle %s, inactive %s\n", c.Name, c.Pending, c.Idle, c.Inactive)
			}
		}
	}
	return b.String()
}

// recovery follows the binaries after Redis came back: each must be ready
// again and show work done since (ingest applying, the flusher flushing,
// the worker pushing).
type recovery struct {
	back    time.Time
	applied map[string]float64 // ingest events applied when Redis came back, by process
	pushes  int                // deliveries when Redis came back
	done    map[string]time.Duration
}

func newRecovery(ctx context.Context, back time.Time, addrs map[string]string, pushes int) *recovery {
	r := &recovery{back: back, applied: map[string]float64{}, pushes: pushes, done: map[string]time.Duration{}}
	for n, a := range addrs {
		if strings.HasPrefix(n, "ingest") {
			r.applied[n], _ = scrape(ctx, a, "nudge_ingest_events_applied_total")
		}
	}
	return r
}

// poll checks the binaries not recovered yet and reports whether all are.
func (r *recovery) poll(ctx context.Context, addrs map[string]string, pushes int) bool {
	for n, a := range addrs {
		if _, ok := r.done[n]; ok || !ready(ctx, a) {
			continue
		}
		var working bool
		switch {
		case strings.HasPrefix(n, "ingest"):
			v, err := scrape(ctx, a, "nudge_ingest_events_applied_total")
			working = err == nil && v > r.applied[n]
		case n == "flusher":
			v, err := scrape(ctx, a, "nudge_flush_last_success_timestamp_seconds")
			working = err == nil && v > float64(r.back.UnixNano())/1e9
		case n == "worker":
			working = pushes > r.pushes
		}
		if working {
			r.done[n] = time.Since(r.back)
		}
	}
	return len(r.done) == len(addrs)
}

func (r *recovery) slowest() (time.Duration, string) {
	var d time.Duration
	var who string
	for n, t := range r.done {
		if t > d {
			d, who = t, n
		}
	}
	return d, who
}

func (r *recovery) missing(names []string) []string {
	var out []string
	for _, n := range names {
		if _, ok := r.done[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// ready reports whether a process's /readyz answers 200.
func ready(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// scrape returns the sum of a metric's samples on a process's /metrics.
func scrape(ctx context.Context, addr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s: no %s", addr, name)
	}
	return sum, nil
}

// redisServer is a private redis-server with the documented persistence,
// stoppable and restartable on the same port and data.
type redisServer struct {
	path, dir, addr string
	cmd             *exec.Cmd
	done            chan struct{}
}

// startRedis starts a redis-server on a free port with its data in dir.
func startRedis(ctx context.Context, path, dir string) (*redisServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var errs []error
	for range 5 {
		port, err := freePort(ctx)
		if err != nil {
			return nil, err
		}
		s := &redisServer{path: path, dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		conf := append([]string{"port " + strconv.Itoa(port), "bind 127.0.0.1", "dir " + dir, "daemonize no",
			"appendfilename appendonly.aof", "appenddirname appendonlydir"}, RedisPersistence...)
		if err := os.WriteFile(filepath.Join(dir, "redis.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
		if err = s.start(ctx); err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("no redis-server started: %w", errors.Join(errs...))
}

// start starts the server and waits until it answers PING (after loading
// its AOF).
func (s *redisServer) start(ctx context.Context) error {
	f, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.path, filepath.Join(s.dir, "redis.conf"))
	cmd.Stdout, cmd.Stderr = f, f
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(s.done)
	}()
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			s.cmd = nil
			return fmt.Errorf("redis-server %s exited: %v\n%s", s.addr, err, tail(filepath.Join(s.dir, "redis.log"), 10))
		case <-ctx.Done():
			s.kill()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server %s does not answer: %w", s.addr, err)
		}
	}
}

// stop sends the server sig and waits for it to exit; after timeout it is
// killed and stop fails. SIGTERM is a clean shutdown, which writes and
// fsyncs the AOF, and must succeed.
func (s *redisServer) stop(sig syscall.Signal, timeout time.Duration) error {
	if s.cmd == nil {
		return nil
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.kill()
		return fmt.Errorf("redis-server did not shut down within %s", timeout)
	}
	defer func() { s.cmd = nil }()
	if st := s.cmd.ProcessState; sig == syscall.SIGTERM && !st.Success() {
		return fmt.Errorf("redis-server shut down with %s:\n%s", st, tail(filepath.Join(s.dir, "redis.log"), 10))
	}
	return nil
}

// kill ends the server at once, if it runs.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort(ctx context.Context) (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// infoField returns a field of an INFO reply.
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
