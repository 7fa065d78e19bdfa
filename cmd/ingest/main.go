// Command ingest reads chat events from the shard streams through the
// ingest consumer group and applies them to unread state and counters.
// Run as many as you like: they share the shards.
package main

import (
	"context"
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

	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/keys"
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
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	var (
		redisURL  = fs.String("redis-url", "redis://127.0.0.1:6379/0", "Redis URL (redis:// or rediss://)")
		prefix    = fs.String("prefix", keys.DefaultPrefix, "key prefix")
		shards    = fs.Int("shards", keys.DefaultShards, "number of shard streams (same for every producer and consumer)")
		group     = fs.String("group", "nudge-ingest", "consumer group")
		consumer  = fs.String("consumer", "", "stable consumer name, e.g. the pod name (default: host name)")
		batch     = fs.Int("batch", 256, "entries read per batch")
		claimIdle = fs.Duration("claim-idle", 30*time.Second, "idle time after which a silent consumer's shards and pending entries are taken over")
		maxDeliv  = fs.Int("max-deliveries", 5, "deliveries before an entry goes to the dead-letter stream")
		dedupe    = fs.Duration("dedupe-window", 10*time.Minute, "window in which a re-published event id is applied once")
		unreadTTL = fs.Duration("unread-ttl", 30*24*time.Hour, "lifetime of unread state without new messages")
		presence  = fs.Duration("presence-ttl", 2*time.Minute, "how long a device counts as online after its last heartbeat")
		dbURL     = fs.String("database-url", "", "PostgreSQL URL of the device and preference registry (empty: those events are only counted, and reminders use the default delay)")
		reminders = fs.Bool("reminders", true, "schedule a reminder (asynq task) when an unread episode opens")
		queue     = fs.String("queue", "reminders", "asynq queue of reminders (the worker's)")
		stages    = fs.String("stages", "5m,1h,24h", "delays of the reminder ladder; the first applies here (the worker's setting)")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
	)
	fs.Usage = flagenv.Usage(fs, "ingest: apply chat events from Redis Streams")
	if err := flagenv.Parse(fs, args, getenv); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))

	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		return fmt.Errorf("-redis-url: %w", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()

	ks := keys.New(*prefix, *shards)
	var (
		reg   ingest.Registry
		prefs jobs.PrefsSource
		hooks ingest.Hooks
	)
	if *dbURL != "" {
		db, err := pgxpool.New(ctx, *dbURL)
		if err != nil {
			return fmt.Errorf("-database-url: %w", err)
		}
		defer db.Close()
		store := registry.New(db)
		reg, prefs = store, registry.NewCache(store, 30*time.Second, 0)
	}
	if *reminders {
		ladder, err := jobs.ParseStages(*stages)
		if err != nil {
			return fmt.Errorf("-stages: %w", err)
		}
		aopt := asynq.RedisClientOpt{Addr: opt.Addr, Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig}
		client := asynq.NewClient(aopt)
		defer client.Close()
		insp := asynq.NewInspector(aopt)
		defer insp.Close()
		sched, err := jobs.NewScheduler(client, insp, rdb, prefs, jobs.Config{Keyspace: ks, Queue: *queue, Stages: ladder, Logger: log})
		if err != nil {
			return err
		}
		hooks = sched
	}

	c, err := ingest.New(rdb, ingest.Config{
		Registry:      reg,
		Hooks:         hooks,
		Keyspace:      ks,
		Group:         *group,
		Consumer:      *consumer,
		BatchSize:     *batch,
		ClaimIdle:     *claimIdle,
		MaxDeliveries: *maxDeliv,
		DedupeWindow:  *dedupe,
		UnreadTTL:     *unreadTTL,
		PresenceTTL:   *presence,
		Logger:        log,
	})
	if err != nil {
		return err
	}
	return c.Run(ctx)
}
