package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
	"github.com/nudgehq/nudge/schema"
)

// pipeline is the real binaries (ingest, worker, flusher) with their
// default settings, run against the push sandbox under a prefix and queue
// of their own.
type pipeline struct {
	rdb    *redis.Client
	db     *pgxpool.Pool
	ks     keys.Keyspace
	pub    *producer.Producer
	sb     *sandbox.Server
	creds  sandbox.Credentials
	procs  map[string]*exec.Cmd
	queue  string
	dir    string
	logger func(msg string, args ...any)
}

// measurePipeline starts the binaries and measures, one after the other
// (those of cfg.Steps), one message to a big group applied and its
// reminders pushed, pushes/s through the worker against the raw FCM
// client, reminder fire lateness, the publish → counter latency under
// load-generator traffic and the effectiveness of reminders under traffic
// that reacts to them; then it reads the peak RSS of each binary.
func measurePipeline(ctx context.Context, cfg Config, rdb *redis.Client, dbURL string, res *Result) (err error) {
	p, err := startPipeline(ctx, cfg, rdb, dbURL)
	if err != nil {
		return err
	}
	defer p.close()
	traffic := time.Duration(max(4, cfg.size(20, 8))) * time.Second
	for _, m := range []struct {
		step, what string
		run        func() error
	}{
		{"burst", "burst apply", func() error { return p.measureBurstApply(ctx, cfg.size(event.MaxRecipients, 5000), res) }},
		{"burst", "burst push", func() error { return p.measureBurstPush(ctx, cfg.size(event.MaxRecipients, 5000), res) }},
		// At least 100 pushes, so that even the smoke run's CPU figures
		// are more than a few scheduler ticks.
		{"push", "push", func() error { return p.measurePush(ctx, max(100, cfg.size(2000, 500)), res) }},
		{"lateness", "fire lateness", func() error { return p.measureLateness(ctx, cfg.size(600, 200), res) }},
		{"latency", "latency", func() error { return measureLatency(ctx, p, traffic, res) }},
		// The effectiveness step needs some hundreds of users even in the
		// smoke run: with 20, a push comes rarely and an open more rarely.
		{"effect", "effectiveness", func() error {
			return p.measureEffectiveness(ctx, max(300, cfg.size(3000, 1000)), traffic, res)
		}},
	} {
		if !cfg.runs(m.step) {
			continue
		}
		if err := m.run(); err != nil {
			return fmt.Errorf("%s: %w", m.what, err)
		}
	}
	res.PeakRSSMiB = map[string]float64{}
	for name, cmd := range p.procs {
		kib, err := peakRSS(cmd.Process.Pid)
		if err != nil {
			return err
		}
		res.PeakRSSMiB[name] = round(float64(kib)/1024, 1)
	}
	return nil
}

func startPipeline(ctx context.Context, cfg Config, rdb *redis.Client, dbURL string) (_ *pipeline, err error) {
	dir, err := os.MkdirTemp("", "nudge-bench")
	if err != nil {
		return nil, err
	}
	prefix := newPrefix("pipe")
	p := &pipeline{rdb: rdb, ks: keys.New(prefix, keys.DefaultShards), queue: prefix + "-reminders", dir: dir,
		procs: map[string]*exec.Cmd{}, logger: cfg.Logger.Info}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	p.pub = producer.New(rdb, producer.Config{Keyspace: p.ks})
	if p.db, err = pgxpool.New(ctx, dbURL); err != nil {
		return p, err
	}
	if _, err := schema.Up(ctx, p.db); err != nil {
		return p, err
	}
	if p.sb, err = sandbox.Start(ctx, sandbox.Config{}); err != nil {
		return p, err
	}
	credsDir := filepath.Join(dir, "sandbox")
	if err := p.sb.WriteCredentials(credsDir); err != nil {
		return p, err
	}
	p.creds = p.sb.Credentials()

	cfg.Logger.Info("building the binaries")
	bin := filepath.Join(dir, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "./cmd/ingest", "./cmd/worker", "./cmd/flusher")
	build.Dir = cfg.Root
	if out, err := build.CombinedOutput(); err != nil {
		return p, fmt.Errorf("go build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "NUDGE_PREFIX="+prefix, "NUDGE_DATABASE_URL="+dbURL,
		"NUDGE_REDIS_URL=redis://"+cfg.RedisAddr+"/0", "NUDGE_QUEUE="+p.queue,
		"NUDGE_LOG_LEVEL=warn", "NUDGE_METRICS_ADDR=")
	args := map[string][]string{
		"ingest":  {"-consumer", "bench"},
		"worker":  p.sb.WorkerArgs(credsDir),
		"flusher": nil,
	}
	for name, a := range args {
		log, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return p, err
		}
		cmd := exec.Command(filepath.Join(bin, name), a...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, log, log
		if err := cmd.Start(); err != nil {
			log.Close()
			return p, fmt.Errorf("start %s: %w", name, err)
		}
		p.procs[name] = cmd
	}
	return p, nil
}

// close stops the binaries (SIGTERM, then SIGKILL after 10s) and removes
// what the run left: keys, queue, sandbox, files.
func (p *pipeline) close() {
	var wg sync.WaitGroup
	for _, cmd := range p.procs {
		wg.Go(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			t := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
			_ = cmd.Wait()
			t.Stop()
		})
	}
	wg.Wait()
	deleteQueue(context.Background(), p.rdb, p.queue)
	deletePrefix(context.Background(), p.rdb, p.ks.Prefix)
	if p.sb != nil {
		_ = p.sb.Close()
	}
	if p.db != nil {
		p.db.Close()
	}
	_ = os.RemoveAll(p.dir)
}

// alive returns an error naming a binary that exited, with its log's tail.
func (p *pipeline) alive() error {
	for name, cmd := range p.procs {
		if cmd.ProcessState != nil || cmd.Process.Signal(syscall.Signal(0)) != nil {
			b, _ := os.ReadFile(filepath.Join(p.dir, name+".log"))
			return fmt.Errorf("%s exited: %s", name, b[max(0, len(b)-2000):])
		}
	}
	return nil
}

// users registers an FCM device and a reminder delay for each of n users
// named prefix<i>, waits until ingest has stored them, and returns their
// tokens.
func (p *pipeline) users(ctx context.Context, prefix string, n int, delay time.Duration) ([]string, error) {
	tokens := make([]string, n)
	d := int64(delay / time.Second)
	var evs []*event.Event
	ts := time.Now().UnixMilli()
	for i := range tokens {
		tokens[i] = sandbox.NewDeviceToken(event.PlatformFCM)
		u := prefix + strconv.Itoa(i)
		evs = append(evs,
			&event.Event{V: 1, Type: event.TypeDeviceRegistered, ID: "dev-" + u, TS: ts, User: u, Platform: event.PlatformFCM, Token: tokens[i]},
			&event.Event{V: 1, Type: event.TypePrefs, ID: "prefs-" + u, TS: ts, User: u, ReminderDelayS: &d})
	}
	for i := 0; i < len(evs); i += 1000 {
		if _, err := p.pub.PublishBatch(ctx, evs[i:min(i+1000, len(evs))]); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var devices, prefs int
		if err := p.db.QueryRow(ctx, "SELECT (SELECT count(*) FROM devices WHERE user_id LIKE $1), (SELECT count(*) FROM user_prefs WHERE user_id LIKE $1)",
			prefix+"%").Scan(&devices, &prefs); err != nil {
			return nil, err
		}
		if devices == n && prefs == n {
			return tokens, nil
		}
		if err := p.alive(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("ingest stored %d devices and %d preferences of %d users", devices, prefs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// message returns a message to user in a conversation of their own.
func message(id, user string) *event.Event {
	return &event.Event{V: 1, Type: event.TypeMessage, ID: id, TS: time.Now().UnixMilli(), Conversation: "c-" + user,
		Message: "m-" + id, Sender: "s-" + user, Recipients: []string{user}, Preview: "are you coming?"}
}

// waitDeliveries waits until the sandbox has recorded n deliveries.
func (p *pipeline) waitDeliveries(ctx context.Context, n int) ([]sandbox.Delivery, error) {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err := p.sb.WaitFor(wctx, func(d []sandbox.Delivery) bool { return len(d) >= n })
	if err != nil {
		if aerr := p.alive(); aerr != nil {
			return nil, aerr
		}
		return nil, fmt.Errorf("%d of %d pushes delivered: %w", len(p.sb.Deliveries()), n, err)
	}
	return p.sb.Deliveries(), nil
}

// measurePush has the worker push n reminders that come due together,
// timed from the first push to the last, with what Redis and the worker
// process spent on them from shortly before the first fell due until
// their tasks ended (the bench's own process meanwhile, until the last
// push: the sandbox answering); and then the raw FCM client send the same
// pushes again, as many at once as the worker has in flight
// (-push-concurrency): each delivery's own message to its device, checked
// to arrive alike. The raw client also sends n pushes of a bare title and
// body, the limit for the smallest message (push_raw_minimal_per_s).
func (p *pipeline) measurePush(ctx context.Context, n int, res *Result) error {
	tokens, err := p.users(ctx, "push-", n, pushDelay)
	if err != nil {
		return err
	}
	var evs []*event.Event
	for i := range n {
		evs = append(evs, message("push-msg-"+strconv.Itoa(i), "push-"+strconv.Itoa(i)))
	}
	for i := 0; i < len(evs); i += 500 {
		if _, err := p.pub.PublishBatch(ctx, evs[i:min(i+500, len(evs))]); err != nil {
			return err
		}
	}
	due, err := p.queued(ctx, func(r jobs.Reminder) bool { return strings.HasPrefix(r.Conversation, "c-push-") && r.Stage == 1 }, n)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	// Redis's cost from shortly before the first falls due: less of the
	// idle binaries' background traffic in it.
	first := slices.MinFunc(slices.Collect(maps.Values(due)), time.Time.Compare)
	time.Sleep(time.Until(first.Add(-200 * time.Millisecond)))
	before, err := readRedisCost(ctx, p.rdb)
	if err != nil {
		return err
	}
	worker := p.procs["worker"].Process.Pid
	workerCPU, err := processCPU(worker)
	if err != nil {
		return err
	}
	sandboxCPU, err := processCPU(os.Getpid())
	if err != nil {
		return err
	}
	ds, err := p.waitDeliveries(ctx, n)
	if err != nil {
		return err
	}
	// The sandbox's part ends with the last push; the worker's and
	// Redis's with the tasks, which record and finish the pushes.
	if sandboxCPU, err = cpuSince(os.Getpid(), sandboxCPU); err != nil {
		return err
	}
	if err := p.tasksDone(ctx); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	after, err := readRedisCost(ctx, p.rdb)
	if err != nil {
		return err
	}
	if workerCPU, err = cpuSince(worker, workerCPU); err != nil {
		return err
	}
	cost := after.perEvent(before, int64(n))
	res.PushRedisUsPerPush, res.PushRedisCommandsPerPush = round(cost.cpuUs, 1), round(cost.commands, 2)
	perPush := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	res.PushWorkerCPUUsPerPush, res.PushSandboxCPUUsPerPush = round(perPush(workerCPU), 1), round(perPush(sandboxCPU), 1)
	rate := float64(n-1) / ds[len(ds)-1].Time.Sub(ds[0].Time).Seconds()
	p.sb.Reset()

	fcm, err := push.NewFCM(ctx, push.FCMConfig{ProjectID: p.creds.ProjectID, CredentialsJSON: p.creds.ServiceAccountJSON, Endpoint: p.creds.FCMEndpoint})
	if err != nil {
		return err
	}
	defer func() { _ = fcm.Close() }()
	rawCPU, err := processCPU(os.Getpid())
	if err != nil {
		return err
	}
	rawRate, err := rawPushes(ctx, fcm, len(ds), func(i int) (push.Message, string) { return ds[i].Message(), ds[i].Token })
	if err != nil {
		return err
	}
	if rawCPU, err = cpuSince(os.Getpid(), rawCPU); err != nil {
		return err
	}
	res.PushRawCPUUsPerPush = round(perPush(rawCPU), 1)
	res.PushCPURatio = ratio(res.PushRawCPUUsPerPush-res.PushSandboxCPUUsPerPush, res.PushWorkerCPUUsPerPush+res.PushRedisUsPerPush)
	if err := sameDeliveries(ds, p.sb.Deliveries()); err != nil {
		return err
	}
	p.sb.Reset()
	minimal := push.Message{Title: "Ana", Body: "are you coming?"}
	minRate, err := rawPushes(ctx, fcm, len(tokens), func(i int) (push.Message, string) { return minimal, tokens[i] })
	if err != nil {
		return err
	}
	p.logger("push", "pushes/s", round(rate, 0), "raw pushes/s", round(rawRate, 0), "raw pushes/s, minimal message", round(minRate, 0),
		"redis cpu µs/push", res.PushRedisUsPerPush, "redis commands/push", res.PushRedisCommandsPerPush,
		"worker cpu µs/push", res.PushWorkerCPUUsPerPush, "sandbox cpu µs/push", res.PushSandboxCPUUsPerPush,
		"raw client and sandbox cpu µs/push", res.PushRawCPUUsPerPush, "cpu ratio", res.PushCPURatio)
	res.PushPerS, res.PushRawPerS, res.PushRatio = round(rate, 0), round(rawRate, 0), ratio(rate, rawRate)
	res.PushRawMinimalPerS, res.PushMinimalRatio = round(minRate, 0), ratio(rate, minRate)
	p.sb.Reset()
	return nil
}

// pushDelay is the push measurement's reminder delay: time enough to see
// every reminder queued before the first falls due.
const pushDelay = 2 * time.Second

// tasksDone waits until the queue has no task pending or running: the
// tasks that pushed have recorded and finished their reminders.
func (p *pipeline) tasksDone(ctx context.Context) error {
	insp := asynq.NewInspectorFromRedisClient(p.rdb)
	defer insp.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		q, err := insp.GetQueueInfo(p.queue)
		if err != nil {
			return fmt.Errorf("queue info: %w", err)
		}
		if q.Pending == 0 && q.Active == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d tasks pending and %d running after a minute", q.Pending, q.Active)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pushConcurrency is cmd/worker's default -push-concurrency.
const pushConcurrency = 64

// rawPushes sends n pushes with fcm alone (the i-th: push i), as many at
// once as the worker has in flight, and returns pushes/s from the first
// send to the last answer.
func rawPushes(ctx context.Context, fcm *push.FCM, n int, pushNo func(i int) (push.Message, string)) (float64, error) {
	next := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	start := time.Now()
	for range pushConcurrency {
		wg.Go(func() {
			for i := range next {
				msg, tok := pushNo(i)
				r, err := fcm.Send(ctx, msg, []string{tok})
				if err == nil && r[0].Outcome != push.Delivered {
					err = fmt.Errorf("raw push: %s", r[0].Reason)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	rate := float64(n) / time.Since(start).Seconds()
	select {
	case err := <-errs:
		return 0, err
	default:
		return rate, nil
	}
}

// sameDeliveries checks that the raw client's pushes (again) arrived as
// the worker's (was) did, device by device, payload size included.
func sameDeliveries(was, again []sandbox.Delivery) error {
	if len(again) != len(was) {
		return fmt.Errorf("raw client: %d pushes delivered, want %d", len(again), len(was))
	}
	byToken := make(map[string]sandbox.Delivery, len(was))
	for _, d := range was {
		byToken[d.Token] = d
	}
	for _, d := range again {
		w := byToken[d.Token]
		if d.PayloadBytes != w.PayloadBytes || d.Title != w.Title || d.Body != w.Body || !maps.Equal(d.Data, w.Data) {
			return fmt.Errorf("raw client's push to %s differs from the worker's: %d bytes %q %q %v, worker %d bytes %q %q %v",
				push.RedactToken(d.Token), d.PayloadBytes, d.Title, d.Body, d.Data, w.PayloadBytes, w.Title, w.Body, w.Data)
		}
	}
	return nil
}

// measureLateness publishes n messages spread over two seconds to users
// whose reminder delay is 3s, and measures how late each push reached the
// sandbox after publish time + 3s. The scheduler's due time is later
// (ingest time + 3s), so the lateness is an upper bound and "early" is
// strict.
func (p *pipeline) measureLateness(ctx context.Context, n int, res *Result) error {
	const delay = 3 * time.Second
	tokens, err := p.users(ctx, "late-", n, delay)
	if err != nil {
		return err
	}
	due := make(map[string]time.Time, n)
	gap := 2 * time.Second / time.Duration(n)
	for i := range n {
		at := publishTime()
		if _, err := p.pub.Publish(ctx, message("late-msg-"+strconv.Itoa(i), "late-"+strconv.Itoa(i))); err != nil {
			return err
		}
		due[tokens[i]] = at.Add(delay)
		time.Sleep(gap)
	}
	ds, err := p.waitDeliveries(ctx, n)
	if err != nil {
		return err
	}
	late := make([]time.Duration, 0, n)
	for _, d := range ds {
		l := d.Time.Sub(due[d.Token])
		if l < 0 {
			res.FireEarlyCount++
		}
		late = append(late, l)
	}
	late = sortedCopy(late)
	if res.FireEarlyCount > 0 {
		p.logger("pushes before publish time + delay", "count", res.FireEarlyCount, "earliest ms", round(float64(late[0].Microseconds())/1000, 3))
	}
	res.FireCount = len(late)
	res.FireLatenessP50Ms, res.FireLatenessP99Ms = percentile(late, 50), percentile(late, 99)
	p.sb.Reset()
	return nil
}

// publishTime is the time a publish starts, as Nudge dates what follows:
// in whole milliseconds, rounded down. A reminder is due its delay after
// the millisecond ingest applied the message in (the apply script's "now",
// ms since the epoch), which on a quick machine can be the millisecond the
// publish started in: a push that comes less than a millisecond before
// publish time + delay, to the nanosecond, is not early.
func publishTime() time.Time { return time.Now().Truncate(time.Millisecond) }

// peakRSS returns the peak resident set size (VmHWM) of a process in KiB.
// processCPU returns the CPU time, user and system, that process pid has
// used: for the bench's own process from getrusage; for another, the sum
// of its threads' time on a CPU (/proc/<pid>/task/*/schedstat, in
// nanoseconds), or where the kernel keeps no schedstat, /proc/<pid>/stat's
// clock ticks of 10 ms (USER_HZ is 100 on Linux).
func processCPU(pid int) (time.Duration, error) {
	if pid == os.Getpid() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0, err
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
	}
	if d, err := schedCPU(pid); err == nil {
		return d, nil
	}
	return statCPU(pid)
}

// schedCPU returns the time process pid's threads have run, from their
// schedstat files. A thread that has exited is not counted (Go's seldom
// exit).
func schedCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return 0, err
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, fmt.Errorf("%s/%s/schedstat: %q", dir, t.Name(), b)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, t.Name(), err)
		}
		ns += n
	}
	return time.Duration(ns), nil
}

// statCPU returns the CPU time of process pid from /proc/<pid>/stat.
func statCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is the first, utime the 12th, stime the 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// cpuSince returns the CPU time process pid has used since it had used
// before.
func cpuSince(pid int, before time.Duration) (time.Duration, error) {
	now, err := processCPU(pid)
	return now - before, err
}

func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
