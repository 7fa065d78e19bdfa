// Command loadgen publishes realistic chat traffic to Nudge's shard streams:
// messages in Zipf-skewed conversations with fixed membership, reads after
// a log-normal delay, presence, device tokens and preferences, and on
// request duplicates and malformed entries. It prints a progress line every
// second on standard error and a summary at the end (-json for a machine).
//
//	go run ./cmd/loadgen -rate 5000 -duration 1m
//	go run ./cmd/loadgen -total 1000000 -time-scale 0.01 -record events.ndjson -json
//
// Every flag can also be set by its NUDGE_* environment variable (-rate:
// NUDGE_RATE); see -h. The first SIGINT or SIGTERM finishes the batch in
// flight and prints the summary; a second one stops at once.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/loadgen"
	"github.com/nudgehq/nudge/keys"
)

func main() {
	cli.Main("loadgen", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr) })
}

type options struct {
	cfg      loadgen.Config
	redis    datastore.Redis
	prefix   string
	shards   int
	record   string
	asJSON   bool
	progress time.Duration
	apps     string
	start    string
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("loadgen", "loadgen: publish realistic chat traffic to Nudge's streams", flagenv.EnvName)
	cfg := &o.cfg
	o.redis.Register(fs.FlagSet, datastore.DefaultRedisURL)
	fs.StringVar(&o.prefix, "prefix", keys.DefaultPrefix, "key prefix")
	fs.IntVar(&o.shards, "shards", keys.DefaultShards, "number of shard streams")
	fs.StringVar(&o.record, "record", "", "write every valid event published to this file, one JSON object per line")
	fs.BoolVar(&o.asJSON, "json", false, "print the summary as JSON")
	fs.DurationVar(&o.progress, "progress", time.Second, "period of the progress line on standard error; 0 disables it")
	fs.StringVar(&o.apps, "apps", event.DefaultApp, "comma-separated apps (tenants)")
	fs.StringVar(&o.start, "start", "", "timestamp of the first event, RFC 3339 (default now)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "random seed: the same seed draws the same users, conversations and events")
	fs.StringVar(&cfg.IDPrefix, "id-prefix", "", `prefix of event and message ids (default "lg<seed>"); change it to re-run a seed within Nudge's dedupe window`)
	fs.IntVar(&cfg.Users, "users", loadgen.DefaultUsers, "number of users")
	fs.IntVar(&cfg.Conversations, "conversations", loadgen.DefaultConversations, "number of conversations")
	fs.Float64Var(&cfg.GroupFraction, "group-fraction", loadgen.DefaultGroupFraction, "share of conversations that are groups")
	fs.IntVar(&cfg.GroupSizeMin, "group-min", loadgen.DefaultGroupSizeMin, "smallest group")
	fs.IntVar(&cfg.GroupSizeMax, "group-max", loadgen.DefaultGroupSizeMax, "largest ordinary group")
	fs.Float64Var(&cfg.LargeGroupFraction, "large-group-fraction", loadgen.DefaultLargeGroupFraction, "share of groups that are large")
	fs.IntVar(&cfg.LargeGroupSize, "large-group-size", loadgen.DefaultLargeGroupSize, "members of a large group")
	fs.Float64Var(&cfg.ZipfS, "zipf-s", loadgen.DefaultZipfS, "skew of user and conversation activity (Zipf s > 1)")
	fs.Float64Var(&cfg.MentionRate, "mention-rate", loadgen.DefaultMentionRate, "share of group messages with mentions")
	fs.Float64Var(&cfg.ReadProbability, "read-probability", loadgen.DefaultReadProbability, "chance a recipient reads the conversation after a delay")
	fs.DurationVar(&cfg.ReadDelay, "read-delay", loadgen.DefaultReadDelay, "median read delay")
	fs.DurationVar(&cfg.ReadDelayMax, "read-delay-max", loadgen.DefaultReadDelayMax, "longest read delay")
	fs.Float64Var(&cfg.ReadDelaySigma, "read-delay-sigma", loadgen.DefaultReadDelaySigma, "spread of read delays (sigma of their logarithm)")
	fs.Float64Var(&cfg.PartialReadRate, "partial-read-rate", loadgen.DefaultPartialReadRate, "share of reads up to an older message than the newest")
	fs.Float64Var(&cfg.PresenceRate, "presence-rate", loadgen.DefaultPresenceRate, "share of new events that are presence changes")
	fs.Float64Var(&cfg.DeviceFraction, "device-fraction", loadgen.DefaultDeviceFraction, "share of users with push devices")
	fs.Float64Var(&cfg.APNsFraction, "apns-fraction", loadgen.DefaultAPNsFraction, "share of devices on APNs (the rest FCM)")
	fs.Float64Var(&cfg.DeviceChurnRate, "device-churn-rate", loadgen.DefaultDeviceChurnRate, "share of new events that replace a push token")
	fs.Float64Var(&cfg.PrefsFraction, "prefs-fraction", loadgen.DefaultPrefsFraction, "share of users who set preferences")
	fs.Float64Var(&cfg.DuplicateRate, "duplicate-rate", 0, "share of events published twice with the same id")
	fs.Float64Var(&cfg.BadRate, "bad-rate", 0, "share of malformed entries, for dead-letter tests")
	fs.StringVar(&cfg.PushFeed, "push-feed", "", "control URL of the push sandbox the worker pushes to (http://host:port/sandbox): users react to the pushes their devices get")
	fs.Float64Var(&cfg.OpenRate, "open-rate", 0, "with -push-feed: share of pushes the user opens (notification.opened)")
	fs.Float64Var(&cfg.PushReadRate, "push-read-rate", 0, "with -push-feed: share of pushes after which the user reads the conversation")
	fs.DurationVar(&cfg.ReminderDelay, "reminder-delay", 0, "every user's first reminder delay (prefs at setup), so reminders fall due in a short run; 0: users draw their own")
	fs.Float64Var(&cfg.Rate, "rate", 0, "entries per second; 0 is as fast as Redis takes them")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long; 0 is no limit")
	fs.Int64Var(&cfg.Total, "total", 0, "stop after this many entries (not counting the setup); 0 is no limit")
	fs.DurationVar(&cfg.Tail, "tail", 0, "after the traffic, keep publishing what falls due (reads, duplicates, reactions to pushes) this long")
	fs.Float64Var(&cfg.TimeScale, "time-scale", loadgen.DefaultTimeScale, "multiplies read and duplicate delays (0.01: a 30s delay takes 300ms)")
	fs.Int64Var(&cfg.MaxLen, "max-len", 0, "backstop length of each stream, XADD MAXLEN ~ (0: 1,000,000; -1: none)")
	fs.IntVar(&cfg.BatchSize, "batch", loadgen.DefaultBatchSize, "events per pipelined batch")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", loadgen.DefaultPublishTimeout, "timeout of each batch")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var o options
	fs := flags(&o)
	fs.SetOutput(stderr)
	cfg := &o.cfg
	prefix, shards, record, asJSON, progress, apps, start := &o.prefix, &o.shards, &o.record, &o.asJSON, &o.progress, &o.apps, &o.start
	if err := cli.Parse(fs, args, getenv, true); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	// On the command line 0 means none; in a Config it means the default.
	for _, v := range []*float64{&cfg.GroupFraction, &cfg.LargeGroupFraction, &cfg.MentionRate,
		&cfg.ReadProbability, &cfg.PartialReadRate, &cfg.PresenceRate, &cfg.DeviceFraction,
		&cfg.APNsFraction, &cfg.DeviceChurnRate, &cfg.PrefsFraction} {
		if *v == 0 {
			*v = -1
		}
	}
	cfg.Apps = nil
	for a := range strings.SplitSeq(*apps, ",") {
		if a = strings.TrimSpace(a); a != "" {
			cfg.Apps = append(cfg.Apps, a)
		}
	}
	if *start != "" {
		t, err := time.Parse(time.RFC3339Nano, *start)
		if err != nil {
			return fmt.Errorf("-start: %w", err)
		}
		cfg.Start = t
	}
	cfg.Keyspace = keys.New(*prefix, *shards)

	ropt, err := o.redis.Options()
	if err != nil {
		return err
	}
	// The runner retries a failed batch itself, after reading back what
	// Redis applied; go-redis's own retries would re-send a pipeline whose
	// replies were lost and add copies the record does not hold.
	if ropt.Single != nil {
		ropt.Single.MaxRetries = -1
	} else {
		ropt.Cluster.MaxRetries = -1
	}
	rdb := ropt.Client()
	defer rdb.Close()

	if *record != "" {
		f, err := os.Create(*record)
		if err != nil {
			return err
		}
		defer f.Close() // after the explicit Close below, a no-op
		cfg.Record = f
	}
	if *progress > 0 {
		cfg.ProgressInterval = *progress
		cfg.Progress = progressLine(stderr)
	}
	r, err := loadgen.New(rdb, *cfg)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("redis %s: %w", ropt.Describe(), err)
	}

	st, err := r.Run(ctx)
	if *progress > 0 && isTerminal(stderr) {
		fmt.Fprintln(stderr) // end the progress line
	}
	if f, ok := cfg.Record.(*os.File); ok {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("record: %w", cerr)
		}
	}
	if *asJSON {
		if jerr := writeJSON(stdout, st); err == nil {
			err = jerr
		}
	} else {
		writeSummary(stdout, st)
	}
	return err
}

// progressLine returns a Progress callback printing one line per call: the
// rate since the previous call, the totals by type and the time elapsed. On
// a terminal the line is rewritten in place.
func progressLine(w io.Writer) func(loadgen.Stats) {
	var prev loadgen.Stats
	format := "%s\n"
	if isTerminal(w) {
		format = "\r\033[K%s"
	}
	return func(s loadgen.Stats) {
		rate := 0.0
		if dt := (s.Elapsed - prev.Elapsed).Seconds(); dt > 0 {
			rate = float64(s.Events-prev.Events) / dt
		}
		prev = s
		fmt.Fprintf(w, format, fmt.Sprintf("%7.1fs %8.0f ev/s  total %d: msg %d read %d presence %d device %d/%d prefs %d dup %d bad %d",
			s.Elapsed.Seconds(), rate, s.Events, s.Messages, s.Reads, s.ByType[event.TypePresence],
			s.ByType[event.TypeDeviceRegistered], s.ByType[event.TypeDeviceRemoved], s.ByType[event.TypePrefs],
			s.Duplicates, s.Bad))
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func writeJSON(w io.Writer, st loadgen.Stats) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		loadgen.Stats
		ElapsedS   float64 `json:"elapsed_s"`
		EventsPerS float64 `json:"events_per_s"`
	}{st, st.Elapsed.Seconds(), st.Rate()})
}

func writeSummary(w io.Writer, st loadgen.Stats) {
	fmt.Fprintf(w, "published %d entries in %.1fs (%.0f/s), %d of them setup\n",
		st.Events, st.Elapsed.Seconds(), st.Rate(), st.Setup)
	for _, typ := range slices.Sorted(maps.Keys(st.ByType)) {
		fmt.Fprintf(w, "  %-18s %d\n", typ, st.ByType[typ])
	}
	fmt.Fprintf(w, "  %-18s %d (mentions %d)\n", "recipients", st.Recipients, st.Mentions)
	fmt.Fprintf(w, "  %-18s %d\n", "duplicates", st.Duplicates)
	fmt.Fprintf(w, "  %-18s %d", "bad", st.Bad)
	for _, reason := range slices.Sorted(maps.Keys(st.BadByReason)) {
		fmt.Fprintf(w, " %s=%d", reason, st.BadByReason[reason])
	}
	fmt.Fprintf(w, "\n  %-18s %d\n", "reads pending", st.PendingReads)
}
