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

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/telemetry"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal stops at once
	}()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// DefaultMetricsAddr is the default of -metrics-addr.
const DefaultMetricsAddr = "127.0.0.1:9091"

type options struct {
	redis       datastore.Redis
	postgres    datastore.Postgres
	prefix      string
	shards      int
	queue       string
	stages      string
	digest      time.Duration
	rateLimit   int
	rateWindow  time.Duration
	concurrency int
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
	metricsAddr string
	logLevel    string
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	o.redis.Register(fs, datastore.DefaultRedisURL)
	o.postgres.Register(fs, "postgres://postgres@127.0.0.1:5432/nudge?sslmode=disable", "PostgreSQL of the device and preference registry")
	fs.StringVar(&o.prefix, "prefix", keys.DefaultPrefix, "key prefix")
	fs.IntVar(&o.shards, "shards", keys.DefaultShards, "number of shard streams")
	fs.StringVar(&o.queue, "queue", "reminders", "asynq queue of reminders")
	fs.StringVar(&o.stages, "stages", "5m,1h,24h", "delays of the reminder ladder, comma-separated")
	fs.DurationVar(&o.digest, "digest-window", 30*time.Second, "reminders of a user due within this window go out as one digest (negative: off)")
	fs.IntVar(&o.rateLimit, "rate-limit", 10, "most reminders per user per rate window")
	fs.DurationVar(&o.rateWindow, "rate-window", time.Hour, "rate limit window")
	fs.IntVar(&o.concurrency, "concurrency", 20, "reminders processed at once")
	fs.DurationVar(&o.checkEvery, "delayed-check-interval", time.Second, "how often due reminders are moved to the queue (asynq DelayedTaskCheckInterval)")
	fs.StringVar(&o.fcmCreds, "fcm-credentials-file", "", "FCM service-account JSON file (empty: no FCM)")
	fs.StringVar(&o.fcmProject, "fcm-project-id", "", "Firebase project id (default: the service account's)")
	fs.StringVar(&o.fcmEndpoint, "fcm-endpoint", "", "FCM HTTP v1 base URL (default Google's; the push sandbox gives its own)")
	fs.StringVar(&o.apnsKey, "apns-key-file", "", "APNs .p8 signing key file (empty: no APNs)")
	fs.StringVar(&o.apnsKeyID, "apns-key-id", "", "APNs key id")
	fs.StringVar(&o.apnsTeam, "apns-team-id", "", "Apple team id")
	fs.StringVar(&o.apnsTopic, "apns-topic", "", "app bundle id")
	fs.StringVar(&o.apnsHost, "apns-host", "https://api.push.apple.com", "APNs host (https://api.sandbox.push.apple.com for development builds)")
	fs.StringVar(&o.apnsCA, "apns-ca-file", "", "PEM CA to trust for APNs instead of the system roots (the push sandbox's)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", DefaultMetricsAddr, "listen address of /metrics, /healthz and /readyz (empty: none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Usage = flagenv.Usage(fs, "worker: run unread reminders and send pushes")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	fs := flags(&o)
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))
	ladder, err := jobs.ParseStages(o.stages)
	if err != nil {
		return fmt.Errorf("-stages: %w", err)
	}
	ropt, err := o.redis.Options()
	if err != nil {
		return err
	}
	if _, err := o.postgres.Config(); err != nil {
		return err
	}

	reg := telemetry.NewRegistry()
	errs := telemetry.NewErrors(reg, "worker")
	rdb := ropt.Client()
	defer rdb.Close()
	rdb.AddHook(telemetry.RedisHook(errs.Redis))
	db, err := o.postgres.Pool(ctx, telemetry.PGTracer(errs.Postgres))
	if err != nil {
		return err
	}
	defer db.Close()

	senders := map[string]push.Sender{}
	if o.fcmCreds != "" {
		fcm, err := push.NewFCM(ctx, push.FCMConfig{CredentialsFile: o.fcmCreds, ProjectID: o.fcmProject, Endpoint: o.fcmEndpoint, Logger: log})
		if err != nil {
			return fmt.Errorf("fcm: %w", err)
		}
		senders[event.PlatformFCM] = fcm
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
		senders[event.PlatformAPNs] = apns
	}
	if len(senders) == 0 {
		log.Warn("no push provider configured: every reminder will count its devices as failed (set -fcm-credentials-file or -apns-key-file)")
	}
	for p, s := range senders {
		r, err := push.NewRetrier(s, push.RetryConfig{Logger: log})
		if err != nil {
			return err
		}
		senders[p] = r
	}

	client := asynq.NewClient(ropt.Asynq())
	defer client.Close()
	insp := asynq.NewInspector(ropt.Asynq())
	defer insp.Close()
	reg.MustRegister(metrics.NewQueueMetricsCollector(insp))
	cache := registry.NewCache(registry.New(db), 30*time.Second, 0)
	w, err := jobs.NewWorker(rdb, client, cache, senders, jobs.Config{
		Keyspace: keys.New(o.prefix, o.shards), Queue: o.queue, Stages: ladder, DigestWindow: o.digest,
		RateLimit: o.rateLimit, RateWindow: o.rateWindow, Metrics: reg, Logger: log,
	})
	if err != nil {
		return err
	}
	srv := asynq.NewServer(ropt.Asynq(), asynq.Config{
		Concurrency:              o.concurrency,
		Queues:                   map[string]int{o.queue: 1},
		DelayedTaskCheckInterval: o.checkEvery,
		RetryDelayFunc:           jobs.RetryDelay,
		ShutdownTimeout:          25 * time.Second,
		Logger:                   asynqLogger{log},
		LogLevel:                 asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(jobs.TypeReminder, w)
	checks := []telemetry.Check{telemetry.RedisCheck(rdb), telemetry.PostgresCheck(db)}
	return telemetry.RunBeside(ctx, telemetry.ServerConfig{Addr: o.metricsAddr, Registry: reg, Checks: checks, Logger: log}, func(ctx context.Context) error {
		if err := srv.Start(mux); err != nil {
			return err
		}
		log.Info("worker started", "redis", ropt.Describe(), "queue", o.queue, "stages", o.stages, "providers", len(senders))
		<-ctx.Done()
		// Stop taking tasks, let the running ones finish (up to
		// ShutdownTimeout), and hand the rest back to the queue.
		srv.Shutdown()
		log.Info("worker stopped")
		return nil
	})
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
