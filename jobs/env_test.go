package jobs_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/apps"
	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/netfault"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/poll"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
	"github.com/nudgehq/nudge/registry"
)

// env is the whole reminder path, in one test: ingest with the scheduler
// hooks, the registry in Postgres, an asynq server running the worker, and
// the push sandbox reached through the real FCM and APNs clients.
type env struct {
	rdb   *redis.Client
	ks    keys.Keyspace
	pub   *producer.Producer
	db    *pgxpool.Pool
	reg   *registry.Store
	sb    *sandbox.Server
	insp  *asynq.Inspector
	queue string
	dbURL string
	// proxy, with options.proxyWorker, stands between the worker and Redis.
	proxy *netfault.Proxy
	// worker is the env's worker, also with options.noWorker (a test then
	// runs its tasks by hand: ProcessTask).
	worker *jobs.Worker
	// metrics are the registries of the scheduler (ingest's) and the
	// worker.
	metrics []*prometheus.Registry
}

type options struct {
	stages        []time.Duration
	digest        time.Duration
	presenceTTL   time.Duration
	noWorker      bool          // run no worker in this process
	concurrency   int           // of the worker; default 4
	checkInterval time.Duration // asynq DelayedTaskCheckInterval; default 100ms
	cacheTTL      time.Duration // of the registry cache; default 1ns (always fresh)
	proxyWorker   bool          // the worker reaches Redis through env.proxy (asynq does not)
	private       bool          // a redis-server of the test's own (its maxmemory can be set)
	conversion    time.Duration // ingest's ConversionWindow; default its own
	// dir, if set, wraps the registry cache the worker reads devices and
	// preferences from.
	dir func(*registry.Cache) jobs.Directory
}

var seq atomic.Int64

func setup(t *testing.T, o options) *env { return setupB(t, o) }

// setupB is setup for tests and benchmarks alike.
func setupB(t testing.TB, o options) *env {
	t.Helper()
	ctx := context.Background()
	rdb, prefix := redistest.New(t)
	redisAddr := redistest.Addr()
	if o.private {
		rdb, redisAddr = redistest.Private(t)
	}
	ks := keys.New(prefix, 4)
	db, dbURL := pgtest.NewMigrated(t)
	sb, err := sandbox.Start(ctx, sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	creds := sb.Credentials()
	fcm, err := push.NewFCM(ctx, push.FCMConfig{ProjectID: creds.ProjectID, CredentialsJSON: creds.ServiceAccountJSON, Endpoint: creds.FCMEndpoint})
	if err != nil {
		t.Fatal(err)
	}
	apns, err := push.NewAPNs(push.APNsConfig{KeyP8: creds.APNsKeyP8, KeyID: creds.APNsKeyID, TeamID: creds.APNsTeamID,
		Topic: creds.APNsTopic, Host: creds.APNsHost, RootCAs: creds.CertPool})
	if err != nil {
		t.Fatal(err)
	}
	senders := map[string]push.Sender{}
	for _, s := range []push.Sender{fcm, apns} {
		r, err := push.NewRetrier(s, push.RetryConfig{BaseDelay: 50 * time.Millisecond, MaxAttempts: 2})
		if err != nil {
			t.Fatal(err)
		}
		senders[s.Platform()] = r
	}

	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	queue := "q-" + prefix
	redisOpt := asynq.RedisClientOpt{Addr: redisAddr}
	client := asynq.NewClient(redisOpt)
	insp := asynq.NewInspector(redisOpt)
	reg := registry.New(db)
	if o.cacheTTL == 0 {
		o.cacheTTL = time.Nanosecond
	}
	cache := registry.NewCache(reg, o.cacheTTL, 0)
	if o.stages == nil {
		o.stages = []time.Duration{time.Second}
	}
	if o.digest == 0 {
		o.digest = -1
	}
	cfg := jobs.Config{Keyspace: ks, Queue: queue, Stages: o.stages, DigestWindow: o.digest, Logger: log}
	schedMet, workerMet := prometheus.NewRegistry(), prometheus.NewRegistry()
	scfg := cfg
	scfg.Metrics = schedMet
	sched, err := jobs.NewScheduler(client, insp, rdb, cache, scfg)
	if err != nil {
		t.Fatal(err)
	}
	var proxy *netfault.Proxy
	wrdb := rdb
	if o.proxyWorker {
		proxy = netfault.New(t, redisAddr)
		wrdb = redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second})
		t.Cleanup(func() { _ = wrdb.Close() })
	}
	wcfg := cfg
	wcfg.Metrics = workerMet
	var dir jobs.Directory = cache
	if o.dir != nil {
		dir = o.dir(cache)
	}
	worker, err := jobs.NewWorker(wrdb, client, dir, apps.Single(senders[push.PlatformFCM], senders[push.PlatformAPNs]), wcfg)
	if err != nil {
		t.Fatal(err)
	}
	if o.concurrency == 0 {
		o.concurrency = 4
	}
	if o.checkInterval == 0 {
		o.checkInterval = 100 * time.Millisecond
	}
	// The worker's server as cmd/worker runs it (jobs.Server), with a
	// shorter shutdown wait than production's 25 s, asynq's default.
	srv, err := jobs.NewServer(worker, redisOpt, jobs.ServerConfig{Concurrency: o.concurrency,
		DelayedCheckInterval: o.checkInterval, ShutdownTimeout: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	if o.noWorker {
		srvDone <- nil
	} else {
		go func() { srvDone <- srv.Run(srvCtx) }()
	}

	icfg := ingest.Config{Keyspace: ks, Consumer: "c", ClaimIdle: 2 * time.Second, Block: 100 * time.Millisecond,
		Hooks: sched, Registry: reg, Logger: log, PresenceTTL: o.presenceTTL, ConversionWindow: o.conversion}
	c, err := ingest.New(rdb, icfg)
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ictx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		stopSrv()
		if err := <-srvDone; err != nil {
			t.Errorf("worker server: %v", err)
		}
		_ = srv.Close()
		redistest.DeleteQueue(t, rdb, queue)
		_ = insp.Close()
		_ = client.Close()
	})
	return &env{rdb: rdb, ks: ks, pub: producer.New(rdb, producer.Config{Keyspace: ks}), db: db, reg: reg, sb: sb, insp: insp, queue: queue, dbURL: dbURL, proxy: proxy, worker: worker,
		metrics: []*prometheus.Registry{schedMet, workerMet}}
}

type quietLogger struct{}

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(...any) {}
func (quietLogger) Fatal(...any) {}

// rawFCM is an FCM client of the sandbox, without the worker around it.
func (e *env) rawFCM(t testing.TB) push.Sender {
	t.Helper()
	c := e.sb.Credentials()
	fcm, err := push.NewFCM(context.Background(), push.FCMConfig{ProjectID: c.ProjectID, CredentialsJSON: c.ServiceAccountJSON, Endpoint: c.FCMEndpoint})
	if err != nil {
		t.Fatal(err)
	}
	return fcm
}

func (e *env) publish(t *testing.T, evs ...*event.Event) time.Time {
	t.Helper()
	now := time.Now()
	if _, err := e.pub.PublishBatch(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	return now
}

func id() string { return "e" + strconv.FormatInt(seq.Add(1), 10) }

func now() int64 { return time.Now().UnixMilli() }

func msg(conv, m, sender string, recipients ...string) *event.Event {
	return &event.Event{V: 1, Type: event.TypeMessage, ID: id(), TS: now(), Conversation: conv, Message: m,
		Sender: sender, Recipients: recipients, Preview: "preview of " + m}
}

func readAll(conv, user string) *event.Event {
	return &event.Event{V: 1, Type: event.TypeRead, ID: id(), TS: now(), Conversation: conv, User: user}
}

func device(user, platform, token string) *event.Event {
	return &event.Event{V: 1, Type: event.TypeDeviceRegistered, ID: id(), TS: now(), User: user, Platform: platform, Token: token}
}

// devices registers one FCM and one APNs device for user and returns their
// tokens once ingest has stored them.
func (e *env) devices(t *testing.T, user string) (fcm, apns string) {
	t.Helper()
	fcm, apns = sandbox.NewDeviceToken(event.PlatformFCM), sandbox.NewDeviceToken(event.PlatformAPNs)
	e.publish(t, device(user, event.PlatformFCM, fcm), device(user, event.PlatformAPNs, apns))
	poll.Until(t, 10*time.Second, "devices stored", func() bool {
		d, _ := e.reg.Devices(context.Background(), user)
		return len(d) == 2
	})
	return fcm, apns
}

// idle waits until the queue holds no task in any state but completed.
func (e *env) idle(t *testing.T) {
	t.Helper()
	poll.Until(t, 30*time.Second, "the reminder queue to drain", func() bool {
		q, err := e.insp.GetQueueInfo(e.queue)
		return err == nil && q.Pending+q.Active+q.Scheduled+q.Retry+q.Aggregating == 0
	})
}

// wantMetric checks that the counter metric of the given reason ("*": of
// any) totals want.
func (e *env) wantMetric(t *testing.T, metric, reason string, want int64) {
	t.Helper()
	if n := e.metric(t, metric, reason); n != want {
		t.Errorf("%s{reason %q} = %d, want %d", metric, reason, n, want)
	}
}

func (e *env) metric(t *testing.T, metric, reason string) int64 {
	t.Helper()
	ctx := context.Background()
	var n int64
	for s := 0; s < e.ks.Shards; s++ {
		mins, _ := e.rdb.ZRange(ctx, e.ks.CounterIndex(s), 0, -1).Result()
		for _, m := range mins {
			mm, _ := strconv.ParseInt(m, 10, 64)
			h, _ := e.rdb.HGetAll(ctx, e.ks.Counters(s, mm)).Result()
			for f, v := range h {
				d, err := counters.ParseField(f)
				if err == nil && d.Metric == metric && (reason == "*" || d.Reason == reason) {
					x, _ := strconv.ParseInt(v, 10, 64)
					n += x
				}
			}
		}
	}
	return n
}

// outcomes returns the recorded outcome of each finished reminder of user
// in conv at stage, from the sent sets.
func (e *env) outcomes(t *testing.T, user, conv string, stage int) []jobs.Outcome {
	t.Helper()
	ctx := context.Background()
	var out []jobs.Outcome
	keys, err := e.rdb.Keys(ctx, e.ks.Sent(e.ks.Shard(conv), user+"|"+conv+"|*|"+strconv.Itoa(stage))).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		members, err := e.rdb.SMembers(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			if o, ok := jobs.ParseOutcome(m); ok {
				out = append(out, o)
			}
		}
	}
	return out
}
