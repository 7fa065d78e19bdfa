package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nudgehq/nudge/internal/chaos"
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

// runRedisRestart runs the Redis restart mode (-redis-restart).
func runRedisRestart(ctx context.Context, o options, dbURL string, stdout io.Writer) error {
	f := o.restart
	rep, err := chaos.RunRedisRestart(ctx, chaos.RestartConfig{
		RedisServer: f.server, DatabaseURL: dbURL, Prefix: "restart" + strconv.FormatUint(o.seed%1_000_000, 10),
		Events: o.events, Rate: o.rate, Restarts: f.restarts, Pauses: f.pauses, Crash: f.crash, Seed: o.seed,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return err
	}
	return finish(stdout, rep, o.seed, o.asJSON)
}
