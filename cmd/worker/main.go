// Command worker runs unread-message reminders: asynq tasks that, when an
// episode is still unread and the user offline and not muted, push to the
// user's devices through FCM and APNs.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynq/x/metrics"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/apps"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/telemetry"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

func main() {
	cli.Main("worker", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout) })
}

// DefaultMetricsAddr is the default of -metrics-addr.
const DefaultMetricsAddr = "127.0.0.1:9091"

type options struct {
	cli.Service
	queue       string
	ingestGroup string
	stages      string
	digest      time.Duration
	rateLimit   int
	rateWindow  time.Duration
	concurrency int
	pushes      int
	batch       int
	checkEvery  time.Duration
	fcmCreds    string
	fcmProject  string
	fcmEndpoint string
	apnsKey     string
	apnsKeyID   string
	apnsTeam    string
	apnsTopic   string
	apnsHost    string
	apnsCA      string
	appsFile    string
	appsCheck   time.Duration
	defaultApp  string
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	o.Service.Register(fs, cli.ServiceFlags{MetricsAddr: DefaultMetricsAddr,
		Postgres: "PostgreSQL of the device and preference registry (required: the same as ingest's)", PostgresRequired: true})
	fs.StringVar(&o.queue, "queue", "reminders", "asynq queue of reminders")
	fs.StringVar(&o.ingestGroup, "ingest-group", ingest.DefaultGroup, "ingest's consumer group (ingest -group): asked whether an episode's opening message is applied yet")
	fs.StringVar(&o.stages, "stages", "5m,1h,24h", "delays of the reminder ladder, comma-separated")
	fs.DurationVar(&o.digest, "digest-window", 30*time.Second, "reminders of a user due within this window go out as one digest (negative: off)")
	fs.IntVar(&o.rateLimit, "rate-limit", 10, "most reminders per user per rate window")
	fs.DurationVar(&o.rateWindow, "rate-window", time.Hour, "rate limit window")
	fs.IntVar(&o.concurrency, "concurrency", 200, "tasks processed at once (a task holds one reminder, or up to -batch-size of one shard due in the same second; it may wait up to a second for its due time)")
	fs.IntVar(&o.pushes, "push-concurrency", 64, "sends to push providers in flight at once, over all tasks")
	fs.IntVar(&o.batch, "batch-size", 500, "most reminders of one task (reminders of a shard due in the same second are run together)")
	fs.DurationVar(&o.checkEvery, "delayed-check-interval", 200*time.Millisecond, "how often due reminders are moved to the queue (asynq DelayedTaskCheckInterval)")
	fs.StringVar(&o.fcmCreds, "fcm-credentials-file", "", "FCM service-account JSON file (empty: no FCM)")
	fs.StringVar(&o.fcmProject, "fcm-project-id", "", "Firebase project id (default: the service account's)")
	fs.StringVar(&o.fcmEndpoint, "fcm-endpoint", "", "FCM HTTP v1 base URL (default Google's; the push sandbox gives its own)")
	fs.StringVar(&o.apnsKey, "apns-key-file", "", "APNs .p8 signing key file (empty: no APNs)")
	fs.StringVar(&o.apnsKeyID, "apns-key-id", "", "APNs key id")
	fs.StringVar(&o.apnsTeam, "apns-team-id", "", "Apple team id")
	fs.StringVar(&o.apnsTopic, "apns-topic", "", "app bundle id")
	fs.StringVar(&o.apnsHost, "apns-host", "https://api.push.apple.com", "APNs host (https://api.sandbox.push.apple.com for development builds)")
	fs.StringVar(&o.apnsCA, "apns-ca-file", "", "PEM CA to trust for APNs instead of the system roots (the push sandbox's)")
	fs.StringVar(&o.appsFile, "apps-file", "", "apps file (YAML or JSON): each app's push credentials, locale, previews and templates (docs/apps.md); reloaded on SIGHUP and when it or a credential file changes. Empty: the single-app settings above push every app")
	fs.DurationVar(&o.appsCheck, "apps-check-interval", 10*time.Second, "how often the apps file and its credential files are looked at for changes")
	fs.StringVar(&o.defaultApp, "default-app", event.DefaultApp, "with an apps file, the app the single-app settings (-fcm-*, -apns-*) push, if it is not in the file")
	fs.Usage = flagenv.Usage(fs, "worker: run unread reminders and send pushes")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	fs := flags(&o)
	fs.SetOutput(stdout)
	if err := cli.Parse(fs, args, getenv, false); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if err := o.Check(); err != nil {
		return err
	}
	ladder, err := jobs.ParseStages(o.stages)
	if err != nil {
		return cli.Usagef("-stages: %v", err)
	}
	if err := event.CheckApp(o.defaultApp); err != nil {
		return cli.Usagef("-default-app: %v", err)
	}
	log := o.Logger(stdout)
	ks := o.Keys()

	d, err := o.Open(ctx, "worker")
	if err != nil {
		return err
	}
	defer d.Close()
	rdb, db, ropt, reg := d.Redis, d.DB, d.RedisOptions, d.Registry

	// The single-app settings: every app's sender without an apps file,
	// the default app's with one.
	retrier := func(s push.Sender) (push.Sender, error) { return push.NewRetrier(s, push.RetryConfig{Logger: log}) }
	var single apps.App
	if o.fcmCreds != "" {
		fcm, err := push.NewFCM(ctx, push.FCMConfig{CredentialsFile: o.fcmCreds, ProjectID: o.fcmProject, Endpoint: o.fcmEndpoint, Logger: log})
		if err != nil {
			return fmt.Errorf("fcm: %w", err)
		}
		if single.FCM, err = retrier(fcm); err != nil {
			return err
		}
	}
	if o.apnsKey != "" {
		var pool *x509.CertPool
		if o.apnsCA != "" {
			pem, err := os.ReadFile(o.apnsCA)
			if err != nil {
				return fmt.Errorf("-apns-ca-file: %w", err)
			}
			pool = x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return errors.New("-apns-ca-file: no certificate in it")
			}
		}
		apns, err := push.NewAPNs(push.APNsConfig{KeyFile: o.apnsKey, KeyID: o.apnsKeyID, TeamID: o.apnsTeam, Topic: o.apnsTopic,
			Host: o.apnsHost, RootCAs: pool, Logger: log})
		if err != nil {
			return fmt.Errorf("apns: %w", err)
		}
		if single.APNs, err = retrier(apns); err != nil {
			return err
		}
	}
	var fallback *apps.App
	if single.FCM != nil || single.APNs != nil {
		single.Name = o.defaultApp
		fallback = &single
	} else if o.appsFile == "" {
		log.Warn("no push provider configured: every reminder will count its devices as failed (set -apps-file, -fcm-credentials-file or -apns-key-file)")
	}
	live, err := apps.NewLive(ctx, o.appsFile, apps.Options{Fallback: fallback, DefaultApp: o.defaultApp, Wrap: retrier, Logger: log}, reg)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go live.Run(ctx, o.appsCheck, hup)

	client := asynq.NewClient(ropt.Asynq())
	defer client.Close()
	insp := asynq.NewInspector(ropt.Asynq())
	defer insp.Close()
	reg.MustRegister(metrics.NewQueueMetricsCollector(insp))
	cache := registry.NewCache(registry.New(db), 30*time.Second, 0)
	w, err := jobs.NewWorker(rdb, client, cache, live, jobs.Config{
		Keyspace: ks, Queue: o.queue, IngestGroup: o.ingestGroup, Stages: ladder, DigestWindow: o.digest,
		RateLimit: o.rateLimit, RateWindow: o.rateWindow, PushConcurrency: o.pushes, BatchSize: o.batch, Metrics: reg, Logger: log,
	})
	if err != nil {
		return err
	}
	// asynq's own connections, made here so that awaitRedis pings them.
	ac := ropt.Asynq().MakeRedisClient()
	arc, ok := ac.(redis.UniversalClient)
	if !ok {
		return fmt.Errorf("asynq: unexpected Redis client %T", ac)
	}
	defer arc.Close()
	srv := asynq.NewServerFromRedisClient(arc, asynq.Config{
		Concurrency:              o.concurrency,
		Queues:                   map[string]int{o.queue: 1},
		DelayedTaskCheckInterval: o.checkEvery,
		// How soon an idle worker looks again for tasks moved to the queue
		// (asynq's default is 1s, which would add up to a second to every
		// reminder's lateness); an empty poll is one cheap round trip.
		TaskCheckInterval: 100 * time.Millisecond,
		RetryDelayFunc:    jobs.RetryDelay,
		ErrorHandler:      asynq.ErrorHandlerFunc(w.HandleError),
		ShutdownTimeout:   25 * time.Second,
		Logger:            asynqLogger{log},
		LogLevel:          asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.Use(awaitRedis(func(ctx context.Context) error { return arc.Ping(ctx).Err() }, redisWait, log))
	mux.Handle(jobs.TypeReminder, w)
	checks := []telemetry.Check{telemetry.RedisCheck(rdb), telemetry.PostgresCheck(db)}
	return telemetry.RunBeside(ctx, telemetry.ServerConfig{Addr: o.MetricsAddr, Registry: reg, Checks: checks, Logger: log}, func(ctx context.Context) error {
		if err := datastore.RequireScripts(ctx, rdb, log, ks.Sent(0, "acl-check"), "worker"); err != nil {
			return err
		}
		if err := srv.Start(mux); err != nil {
			return err
		}
		log.Info("worker started", "redis", ropt.Describe(), "queue", o.queue, "stages", o.stages, "apps_file", o.appsFile,
			"apps", live.Current().Names(), "single_app_providers", fallback != nil)
		<-ctx.Done()
		// Stop taking tasks, let the running ones finish (up to
		// ShutdownTimeout), and hand the rest back to the queue.
		srv.Shutdown()
		log.Info("worker stopped")
		return nil
	})
}

// redisWait bounds how long a task waits for Redis (awaitRedis): less
// than asynq's 30 s task lease, which is not extended while Redis is away.
const redisWait = 20 * time.Second

// awaitRedis is a middleware that, once a task has run, waits while Redis
// does not answer asynq's connections (ping), up to limit, before handing
// the result to asynq. asynq records the result in Redis: the task moves
// to completed, or to retry when it failed (as it does when Redis went
// away under it). A result asynq cannot record leaves the task active
// until its lease has expired and asynq's recoverer, which runs once a
// minute, finds it: the reminder would go out one to two minutes late.
// asynq v0.26 does retry that write in the background, but with a context
// it has already cancelled, so those retries never succeed. With the wait,
// a reminder that failed because Redis restarted is retried a few seconds
// after Redis is back.
//
// The ping must go through asynq's own client: after a run of failed
// dials, go-redis fails a pool's commands at once until a probe, once a
// second, reaches the server again, so another client answering says
// nothing of asynq's.
func awaitRedis(ping func(context.Context) error, limit time.Duration, log *slog.Logger) asynq.MiddlewareFunc {
	return func(h asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			err := h.ProcessTask(ctx, t)
			deadline := time.Now().Add(limit)
			for wait, logged := 100*time.Millisecond, false; ctx.Err() == nil; wait = min(2*wait, time.Second) {
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				perr := ping(pctx)
				cancel()
				if perr == nil {
					if logged {
						log.Info("Redis answers again; the task's result can be recorded", "type", t.Type())
					}
					break
				}
				left := time.Until(deadline)
				if left <= 0 {
					log.Warn("Redis still does not answer; handing the task's result to asynq anyway", "type", t.Type(), "err", perr)
					break
				}
				if !logged {
					log.Warn("Redis does not answer; waiting for it so that asynq can record the task's result",
						"type", t.Type(), "failed", err != nil, "err", perr)
					logged = true
				}
				select {
				case <-ctx.Done():
				case <-time.After(min(wait, left)):
				}
			}
			return err
		})
	}
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
