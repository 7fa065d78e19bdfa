package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nudgehq/nudge/chaos"
)

// restartFlags are the settings of the Redis restart mode.
type restartFlags struct {
	enabled  bool
	server   string
	restarts int
	crash    bool
	pauses   []time.Duration
}

func (r *restartFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&r.enabled, "redis-restart", false, "instead of killing processes, stop and start a redis-server of the run's own (with the persistence deploy/README.md requires) while the traffic flows; -redis-addr and -kill-every do not apply")
	fs.StringVar(&r.server, "redis-server", "redis-server", "redis-server binary of -redis-restart")
	fs.IntVar(&r.restarts, "restarts", 2, "Redis restarts of -redis-restart, spread over the traffic")
	fs.BoolVar(&r.crash, "redis-crash", false, "with -redis-restart, stop Redis with SIGKILL (a process crash) instead of SIGTERM (a clean shutdown)")
	r.pauses = []time.Duration{1500 * time.Millisecond, 4 * time.Second}
	fs.Func("redis-pauses", "how long Redis stays stopped with -redis-restart, restart by restart, the last repeated (comma-separated; default 1.5s,4s: the ingest leases last 3s)", func(v string) error {
		var ds []time.Duration
		for f := range strings.SplitSeq(v, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil {
				return err
			}
			if d < 0 {
				return fmt.Errorf("negative pause %s", d)
			}
			ds = append(ds, d)
		}
		if len(ds) == 0 {
			return errors.New("no pause")
		}
		r.pauses = ds
		return nil
	})
}

func runRedisRestart(ctx context.Context, f restartFlags, dbURL string, events int64, rate float64, seed uint64, asJSON bool, stdout io.Writer) error {
	rep, err := chaos.RunRedisRestart(ctx, chaos.RestartConfig{
		RedisServer: f.server, DatabaseURL: dbURL, Prefix: "restart" + strconv.FormatUint(seed%1_000_000, 10),
		Events: events, Rate: rate, Restarts: f.restarts, Pauses: f.pauses, Crash: f.crash, Seed: seed,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "seed %d, %s: %d events (%d entries, %d after the last restart), %d pushes (%d after), exits %v, %s\n",
			seed, rep.Redis, rep.Events, rep.Published, rep.AfterLastRestart, rep.Pushes, rep.PushesAfterLastRestart, rep.Exits,
			rep.Elapsed.Round(time.Second))
		fmt.Fprintf(stdout, "  producer: %d failed attempts retried, %d entries found added without a reply\n", rep.Retries, rep.Recovered)
		for i, o := range rep.Outages {
			fmt.Fprintf(stdout, "  restart %d at %d entries: shutdown %s, down %s, every binary working again %s later (slowest %s)\n",
				i+1, o.At, o.Stop.Round(time.Millisecond), o.Down.Round(time.Millisecond), o.Recovered.Round(time.Millisecond), o.Slowest)
		}
		for _, m := range []string{"events_applied", "messages_sent", "recipients", "reads", "episodes_opened", "episodes_closed", "duplicates"} {
			fmt.Fprintf(stdout, "  %-16s %10d in Postgres, %10d expected\n", m, rep.Totals[m], rep.Expected[m])
		}
		for _, f := range rep.Failures {
			fmt.Fprintln(stdout, "FAIL:", f)
		}
	}
	if !rep.Passed() {
		return errors.New("promises broken")
	}
	fmt.Fprintln(stdout, "passed")
	return nil
}
