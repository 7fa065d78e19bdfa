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
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/flagenv"
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

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var (
		redisURL    = fs.String("redis-url", "redis://127.0.0.1:6379/0", "Redis URL (redis:// or rediss://)")
		prefix      = fs.String("prefix", keys.DefaultPrefix, "key prefix")
		shards      = fs.Int("shards", keys.DefaultShards, "number of shard streams")
		dbURL       = fs.String("database-url", "postgres://postgres@127.0.0.1:5432/nudge?sslmode=disable", "PostgreSQL URL of the device and preference registry")
		queue       = fs.String("queue", "reminders", "asynq queue of reminders")
		stages      = fs.String("stages", "5m,1h,24h", "delays of the reminder ladder, comma-separated")
		digest      = fs.Duration("digest-window", 30*time.Second, "reminders of a user due within this window go out as one digest (negative: off)")
		rateLimit   = fs.Int("rate-limit", 10, "most reminders per user per rate window")
		rateWindow  = fs.Duration("rate-window", time.Hour, "rate limit window")
		concurrency = fs.Int("concurrency", 20, "reminders processed at once")
		checkEvery  = fs.Duration("delayed-check-interval", time.Second, "how often due reminders are moved to the queue (asynq DelayedTaskCheckInterval)")
		fcmCreds    = fs.String("fcm-credentials-file", "", "FCM service-account JSON file (empty: no FCM)")
		fcmProject  = fs.String("fcm-project-id", "", "Firebase project id (default: the service account's)")
		fcmEndpoint = fs.String("fcm-endpoint", "", "FCM HTTP v1 base URL (default Google's; the push sandbox gives its own)")
		apnsKey     = fs.String("apns-key-file", "", "APNs .p8 signing key file (empty: no APNs)")
		apnsKeyID   = fs.String("apns-key-id", "", "APNs key id")
		apnsTeam    = fs.String("apns-team-id", "", "Apple team id")
		apnsTopic   = fs.String("apns-topic", "", "app bundle id")
		apnsHost    = fs.String("apns-host", "https://api.push.apple.com", "APNs host (https://api.sandbox.push.apple.com for development builds)")
		apnsCA      = fs.String("apns-ca-file", "", "PEM CA to trust for APNs instead of the system roots (the push sandbox's)")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
	)
	fs.Usage = flagenv.Usage(fs, "worker: run unread reminders and send pushes")
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))
	ladder, err := jobs.ParseStages(*stages)
	if err != nil {
		return fmt.Errorf("-stages: %w", err)
	}

	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		return fmt.Errorf("-redis-url: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	db, err := pgxpool.New(ctx, *dbURL)
	if err != nil {
		return fmt.Errorf("-database-url: %w", err)
	}
	defer db.Close()

	senders := map[string]push.Sender{}
	if *fcmCreds != "" {
		fcm, err := push.NewFCM(ctx, push.FCMConfig{CredentialsFile: *fcmCreds, ProjectID: *fcmProject, Endpoint: *fcmEndpoint, Logger: log})
		if err != nil {
			return fmt.Errorf("fcm: %w", err)
		}
		senders[event.PlatformFCM] = fcm
	}
	if *apnsKey != "" {
		var pool *x509.CertPool
		if *apnsCA != "" {
			pem, err := os.ReadFile(*apnsCA)
			if err != nil {
				return fmt.Errorf("-apns-ca-file: %w", err)
			}
			pool = x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return errors.New("-apns-ca-file: no certificate in it")
			}
		}
		apns, err := push.NewAPNs(push.APNsConfig{KeyFile: *apnsKey, KeyID: *apnsKeyID, TeamID: *apnsTeam, Topic: *apnsTopic,
			Host: *apnsHost, RootCAs: pool, Logger: log})
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

	redisOpt := asynq.RedisClientOpt{Addr: opt.Addr, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	cache := registry.NewCache(registry.New(db), 30*time.Second, 0)
	w, err := jobs.NewWorker(rdb, client, cache, senders, jobs.Config{
		Keyspace: keys.New(*prefix, *shards), Queue: *queue, Stages: ladder, DigestWindow: *digest,
		RateLimit: *rateLimit, RateWindow: *rateWindow, Logger: log,
	})
	if err != nil {
		return err
	}
	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency:              *concurrency,
		Queues:                   map[string]int{*queue: 1},
		DelayedTaskCheckInterval: *checkEvery,
		RetryDelayFunc:           jobs.RetryDelay,
		ShutdownTimeout:          25 * time.Second,
		Logger:                   asynqLogger{log},
		LogLevel:                 asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(jobs.TypeReminder, w)
	if err := srv.Start(mux); err != nil {
		return err
	}
	log.Info("worker started", "queue", *queue, "stages", *stages, "providers", len(senders))
	<-ctx.Done()
	// Stop taking tasks, let the running ones finish (up to ShutdownTimeout),
	// and hand the rest back to the queue.
	srv.Shutdown()
	log.Info("worker stopped")
	return nil
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
