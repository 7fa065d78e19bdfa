// Command ingest reads chat events from the shard streams through the
// ingest consumer group and applies them to unread state and counters.
// Run as many as you like: they share the shards.
//
// It serves /metrics, /healthz and /readyz on -metrics-addr; /readyz is
// ready once Redis (and PostgreSQL, with -database-url) answer and this
// consumer has joined the group.
package main

import (
	"context"
	"io"
	"time"

	"github.com/hibiken/asynq"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/jobs"
	"github.com/nudgehq/nudge/registry"
)

func main() {
	cli.Run("ingest", run)
}

type options struct {
	cli.Service
	group      string
	defaultApp string
	conversion time.Duration
	consumer   string
	batch      int
	claimIdle  time.Duration
	maxDeliv   int
	dedupe     time.Duration
	unreadTTL  time.Duration
	presence   time.Duration
	reminders  bool
	queue      string
	stages     string
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("ingest", "ingest: apply chat events from Redis Streams", flagenv.EnvName)
	o.Service.Register(fs.FlagSet, cli.ServiceFlags{MetricsAddr: cli.IngestMetricsAddr,
		Postgres: "PostgreSQL of the device and preference registry (empty: those events are only counted, and reminders use the default delay)"})
	fs.StringVar(&o.group, "group", ingest.DefaultGroup, "consumer group")
	fs.StringVar(&o.consumer, "consumer", "", "stable consumer name, e.g. the pod name (default: host name)")
	fs.StringVar(&o.defaultApp, "default-app", event.DefaultApp, "the app whose ids are kept unscoped; every other app's users, conversations and event ids are kept apart under \"<app>/<id>\" (data written before apps were isolated is this app's)")
	fs.IntVar(&o.batch, "batch", 256, "entries read per batch")
	fs.DurationVar(&o.claimIdle, "claim-idle", 30*time.Second, "idle time after which a silent consumer's shards and pending entries are taken over")
	fs.IntVar(&o.maxDeliv, "max-deliveries", 5, "deliveries before an entry goes to the dead-letter stream")
	fs.DurationVar(&o.dedupe, "dedupe-window", 10*time.Minute, "window in which a re-published event id is applied once")
	fs.DurationVar(&o.unreadTTL, "unread-ttl", 30*24*time.Hour, "lifetime of unread state without new messages")
	fs.DurationVar(&o.presence, "presence-ttl", 2*time.Minute, "how long a device counts as online after its last heartbeat")
	fs.DurationVar(&o.conversion, "conversion-window", ingest.DefaultConversionWindow, "a read this soon after a reminder was pushed counts as that reminder's conversion (reminders_converted)")
	fs.BoolVar(&o.reminders, "reminders", true, "schedule a reminder (asynq task) when an unread episode opens")
	fs.StringVar(&o.queue, "queue", "reminders", "asynq queue of reminders (the worker's)")
	fs.StringVar(&o.stages, "stages", "5m,1h,24h", "delays of the reminder ladder; the first applies here (the worker's setting)")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	if err := o.Parse(flags(&o), args, getenv, stdout); err != nil {
		return err
	}
	var ladder []time.Duration
	if o.reminders {
		var err error
		if ladder, err = jobs.ParseStages(o.stages); err != nil {
			return cli.Usagef("-stages: %v", err)
		}
	}

	d, err := o.Open(ctx, "ingest")
	if err != nil {
		return err
	}
	defer d.Close()
	rdb, ropt, reg, log, ks := d.Redis, d.RedisOptions, d.Registry, d.Log, d.Keys

	var (
		store ingest.Registry
		prefs jobs.PrefsSource
		hooks ingest.Hooks
	)
	if d.DB == nil {
		log.Warn("no -database-url (NUDGE_DATABASE_URL): device and preference events are only counted, not stored, " +
			"so the worker finds no device to push; reminders use the default delay")
	} else {
		s := registry.New(d.DB)
		store, prefs = s, registry.NewCache(s, 30*time.Second, 0)
	}
	if o.reminders {
		client := asynq.NewClient(ropt.Asynq())
		defer client.Close()
		insp := asynq.NewInspector(ropt.Asynq())
		defer insp.Close()
		sched, err := jobs.NewScheduler(client, insp, rdb, prefs, jobs.Config{Keyspace: ks, Queue: o.queue, Stages: ladder, Metrics: reg, Logger: log})
		if err != nil {
			return err
		}
		hooks = sched
	}

	c, err := ingest.New(rdb, ingest.Config{
		Registry:         store,
		Hooks:            hooks,
		Keyspace:         ks,
		Group:            o.group,
		DefaultApp:       o.defaultApp,
		ConversionWindow: o.conversion,
		Consumer:         o.consumer,
		BatchSize:        o.batch,
		ClaimIdle:        o.claimIdle,
		MaxDeliveries:    o.maxDeliv,
		DedupeWindow:     o.dedupe,
		UnreadTTL:        o.unreadTTL,
		PresenceTTL:      o.presence,
		Metrics:          reg,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	log.Info("ingest connecting", "redis", ropt.Describe())
	scripts := cli.Scripts{Key: ks.Outbox(0), Names: []string{"ingest"}}
	if hooks != nil {
		scripts.Names = append(scripts.Names, "scheduler")
	}
	return d.Serve(ctx, scripts, c.Run, c.ReadyCheck())
}
