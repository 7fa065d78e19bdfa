// Command worker runs unread-message reminders: asynq tasks that, when an
// episode is still unread and the user offline and not muted, push to the
// user's devices through FCM and APNs.
package main

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynq/x/metrics"

	"github.com/nudgehq/nudge/apps"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

func main() {
	// Nearly all of a push's allocations (the provider's client, the task's
	// bookkeeping) are short-lived: collecting at twice the default heap
	// growth halved the collections of a run of pushes and took about 7 %
	// off the worker's and Redis's CPU a push (BENCHMARKS.md, "The worker's
	// garbage collector"). GOGC, when set, wins; GOMEMLIMIT still caps the
	// heap.
	cli.GCPercent(os.Getenv, gcPercent)
	cli.Run("worker", run)
}

// gcPercent is the worker's garbage collection target unless GOGC is set.
const gcPercent = 200

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
	single      apps.Flags
	appsFile    string
	appsCheck   time.Duration
	defaultApp  string
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("worker", "worker: run unread reminders and send pushes", flagenv.EnvName)
	o.Service.Register(fs.FlagSet, cli.ServiceFlags{MetricsAddr: cli.WorkerMetricsAddr,
		Postgres: "PostgreSQL of the device and preference registry (required: the same as ingest's)", PostgresRequired: true})
	fs.StringVar(&o.queue, "queue", "reminders", "asynq queue of reminders")
	fs.StringVar(&o.ingestGroup, "ingest-group", ingest.DefaultGroup, "ingest's consumer group (ingest -group): asked whether an episode's opening message is applied yet")
	fs.StringVar(&o.stages, "stages", "5m,1h,24h", "delays of the reminder ladder, comma-separated")
	fs.DurationVar(&o.digest, "digest-window", 30*time.Second, "reminders of a user due within this window go out as one digest (negative: off)")
	fs.IntVar(&o.rateLimit, "rate-limit", 10, "most reminders per user per rate window")
	fs.DurationVar(&o.rateWindow, "rate-window", time.Hour, "rate limit window")
	fs.IntVar(&o.concurrency, "concurrency", jobs.DefaultConcurrency, "tasks processed at once (a task holds one reminder, or up to -batch-size of one shard due in the same second; it may wait up to a second for its due time)")
	fs.IntVar(&o.pushes, "push-concurrency", 64, "sends to push providers in flight at once, over all tasks")
	fs.IntVar(&o.batch, "batch-size", 500, "most reminders of one task (reminders of a shard due in the same second are run together)")
	fs.DurationVar(&o.checkEvery, "delayed-check-interval", jobs.DefaultDelayedCheckInterval, "how often due reminders are moved to the queue (asynq DelayedTaskCheckInterval)")
	o.single.RegisterFlags(fs.FlagSet)
	fs.StringVar(&o.appsFile, "apps-file", "", "apps file (YAML or JSON): each app's push credentials, locale, previews and templates (docs/apps.md); reloaded on SIGHUP and when it or a credential file changes. Empty: the single-app settings above push every app")
	fs.DurationVar(&o.appsCheck, "apps-check-interval", 10*time.Second, "how often the apps file and its credential files are looked at for changes")
	fs.StringVar(&o.defaultApp, "default-app", event.DefaultApp, "with an apps file, the app the single-app settings (-fcm-*, -apns-*) push, if it is not in the file")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	if err := o.Parse(flags(&o), args, getenv, stdout); err != nil {
		return err
	}
	ladder, err := jobs.ParseStages(o.stages)
	if err != nil {
		return cli.Usagef("-stages: %v", err)
	}
	if err := event.CheckApp(o.defaultApp); err != nil {
		return cli.Usagef("-default-app: %v", err)
	}

	d, err := o.Open(ctx, "worker")
	if err != nil {
		return err
	}
	defer d.Close()
	rdb, db, ropt, reg, log, ks := d.Redis, d.DB, d.RedisOptions, d.Registry, d.Log, d.Keys

	// The single-app settings: every app's sender without an apps file,
	// the default app's with one.
	retrier := func(s push.Sender) (push.Sender, error) { return push.NewRetrier(s, push.RetryConfig{Logger: log}) }
	fallback, err := o.single.Build(ctx, o.defaultApp, apps.Options{Wrap: retrier, Logger: log})
	if err != nil {
		return err
	}
	if fallback == nil && o.appsFile == "" {
		log.Warn("no push provider configured: every reminder will count its devices as failed (set -apps-file, -fcm-credentials-file or -apns-key-file)")
	}
	live, err := apps.NewLive(ctx, o.appsFile, apps.Options{Fallback: fallback, DefaultApp: o.defaultApp, Wrap: retrier, Logger: log}, reg)
	if err != nil {
		return err
	}
	hup, stopHangups := cli.Hangups()
	defer stopHangups()
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
	srv, err := jobs.NewServer(w, ropt.Asynq(), jobs.ServerConfig{Concurrency: o.concurrency, DelayedCheckInterval: o.checkEvery,
		Started: func() {
			log.Info("worker started", "redis", ropt.Describe(), "queue", o.queue, "stages", o.stages, "apps_file", o.appsFile,
				"apps", live.Current().Names(), "single_app_providers", fallback != nil)
		}})
	if err != nil {
		return err
	}
	defer srv.Close()
	return d.Serve(ctx, cli.Scripts{Key: ks.Sent(0, "acl-check"), Names: []string{"worker"}}, func(ctx context.Context) error {
		err := srv.Run(ctx)
		log.Info("worker stopped")
		return err
	})
}
