// Command demo runs the whole pipeline on this machine with simulated chat
// traffic: it makes sure Redis and PostgreSQL run, builds the commands,
// starts the push sandbox, migrates, starts two ingest consumers, a worker,
// a flusher and the report server as separate processes, drives traffic
// with the load generator, and shows a live summary. Ctrl-C stops what it
// started, and nothing else.
//
// With -duration it stops by itself; with -check it then fails unless
// events were applied, reminders pushed and counters flushed, so a test
// can run the README's main command.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push/sandbox"
)

func main() {
	cli.Run("demo", run)
}

type options struct {
	services   bool
	redisURL   string
	dbURL      string
	prefix     string
	rate       float64
	duration   time.Duration
	check      bool
	reportAddr string
	fcmAddr    string
	apnsAddr   string
	dir        string
	stages     string
	root       string
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("demo", "demo: the Nudge pipeline with simulated chat traffic and a local push sandbox", demoEnvName)
	fs.BoolVar(&o.services, "services", true, "run scripts/services.sh first (installs and starts Redis and PostgreSQL when absent)")
	fs.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis URL")
	fs.StringVar(&o.dbURL, "database-url", "postgres://postgres@127.0.0.1:5432/nudge_demo?sslmode=disable", "PostgreSQL URL of the demo database (created if missing)")
	fs.StringVar(&o.prefix, "prefix", "nudgedemo", "Redis key prefix of the demo: one the demo made (its keys are cleared at start and removed at exit) or one without keys")
	fs.Float64Var(&o.rate, "rate", 200, "simulated events per second")
	fs.DurationVar(&o.duration, "duration", 0, "stop after the traffic has run this long (0: until Ctrl-C)")
	fs.BoolVar(&o.check, "check", false, "at the end, fail unless events were applied, reminders pushed and counters flushed (needs a -duration of 80s or more, for a minute to close and be flushed)")
	fs.StringVar(&o.reportAddr, "report-addr", "127.0.0.1:8090", "listen address of the report server and dashboard")
	fs.StringVar(&o.fcmAddr, "sandbox-fcm-addr", "127.0.0.1:18085", "listen address of the push sandbox's FCM side")
	fs.StringVar(&o.apnsAddr, "sandbox-apns-addr", "127.0.0.1:18086", "listen address of the push sandbox's APNs side")
	fs.StringVar(&o.dir, "dir", "", "where binaries, credentials and logs go (default: nudge-demo in the temporary directory)")
	fs.StringVar(&o.stages, "stages", "10s,30s,2m", "reminder ladder of the demo (short, to see reminders soon)")
	fs.StringVar(&o.root, "root", ".", "the repository's root (where scripts/ and cmd/ are)")
	return fs
}

// demoEnvName names the variable of a demo flag: NUDGE_DEMO_REDIS_URL for
// -redis-url. The demo never reads the services' NUDGE_REDIS_URL,
// NUDGE_PREFIX or NUDGE_DATABASE_URL, which may be production's.
var demoEnvName = flagenv.ScopedName("demo")

// serviceEnv returns env without the services' NUDGE_* variables (the
// demo's processes get the demo's settings, and nothing else of Nudge's).
func serviceEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, flagenv.Prefix) {
			out = append(out, kv)
		}
	}
	return out
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	fs := flags(&o)
	if err := cli.Parse(fs, args, getenv, true); err != nil {
		return err
	}
	if o.dir == "" {
		o.dir = filepath.Join(os.TempDir(), "nudge-demo")
	}
	d := &demo{o: o, out: stdout}
	return d.run(ctx)
}

type demo struct {
	o     options
	out   io.Writer
	procs []*proc
	bin   string
	logs  string
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) run(ctx context.Context) (err error) {
	o := d.o
	d.bin, d.logs = filepath.Join(o.dir, "bin"), filepath.Join(o.dir, "logs")
	for _, p := range []string{d.bin, d.logs} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	if o.services {
		d.say("== services (Redis, PostgreSQL)")
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(o.root, "scripts/services.sh"))
		cmd.Stdout, cmd.Stderr = d.out, d.out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("scripts/services.sh (run the demo from the repository root): %w", err)
		}
	}
	ropt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return fmt.Errorf("-redis-url: %w", err)
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	d.say("== the demo writes to Redis %s, under the prefix %q,", redactURL(o.redisURL), o.prefix)
	d.say("   and to PostgreSQL %s", redactURL(o.dbURL))
	if err := d.claimPrefix(ctx, rdb); err != nil {
		return err
	}
	defer func() {
		if cerr := d.cleanUp(rdb); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := datastore.EnsureDatabase(ctx, o.dbURL); err != nil {
		return err
	}

	d.say("== building the commands into %s", d.bin)
	build := exec.CommandContext(ctx, "go", "build", "-o", d.bin+"/",
		"./cmd/ingest", "./cmd/worker", "./cmd/flusher", "./cmd/migrate", "./cmd/pushsandbox", "./cmd/report", "./cmd/loadgen")
	build.Dir = o.root
	build.Stdout, build.Stderr = d.out, d.out
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}

	defer func() {
		if serr := d.stopAll(); serr != nil && err == nil {
			err = serr
		}
	}()

	creds := filepath.Join(o.dir, "sandbox")
	_ = os.Remove(filepath.Join(creds, "sandbox.env"))
	if err := d.start("pushsandbox", nil, "-fcm-addr", o.fcmAddr, "-apns-addr", o.apnsAddr, "-creds-dir", creds); err != nil {
		return err
	}
	sandboxEnv, err := waitEnvFile(ctx, filepath.Join(creds, "sandbox.env"))
	if err != nil {
		return err
	}
	common := []string{"NUDGE_REDIS_URL=" + o.redisURL, "NUDGE_DATABASE_URL=" + o.dbURL, "NUDGE_PREFIX=" + o.prefix,
		"NUDGE_SHARDS=" + strconv.Itoa(demoShards)}
	migrate := exec.CommandContext(ctx, filepath.Join(d.bin, "migrate"), "up")
	migrate.Env = append(serviceEnv(os.Environ()), common...)
	migrate.Stdout, migrate.Stderr = d.out, d.out
	if err := migrate.Run(); err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}

	queue := o.prefix + "-reminders"
	rem := []string{"NUDGE_QUEUE=" + queue, "NUDGE_STAGES=" + o.stages}
	for i := 1; i <= 2; i++ {
		if err := d.start("ingest-"+strconv.Itoa(i), append(common, rem...), "-consumer", "demo-ingest-"+strconv.Itoa(i), "-claim-idle", "10s", anyPort); err != nil {
			return err
		}
	}
	if err := d.start("worker", append(append(common, rem...), sandboxEnv...), "-digest-window", "5s", anyPort); err != nil {
		return err
	}
	if err := d.start("flusher", common, "-interval", "5s", "-grace", "2s", anyPort); err != nil {
		return err
	}
	// The demo's one user is an admin: the queues UI lets it delete, run
	// and archive tasks. The token goes through the environment, never a
	// command line (ps shows those), and the browser gets a one-time
	// sign-in link instead of a secret in a URL.
	if err := d.start("report", append(common, "NUDGE_ADMIN_TOKEN="+randomHex(16)), "serve", "-addr", o.reportAddr, anyPort); err != nil {
		return err
	}
	reportURL := "http://" + o.reportAddr
	if err := waitHTTP(ctx, reportURL+"/healthz"); err != nil {
		return fmt.Errorf("the report server: %w; see %s", err, filepath.Join(d.logs, "report.log"))
	}
	link, err := d.signInLink(ctx, common)
	if err != nil {
		return err
	}
	if err := d.start("loadgen", common, "-rate", strconv.FormatFloat(o.rate, 'f', -1, 64), "-users", "300", "-conversations", "150",
		"-read-delay", "6s", "-read-delay-max", "60s", "-read-probability", "0.6", "-device-fraction", "0.9",
		"-bad-rate", "0.002", // a little bad input, to see where it goes
		// People react to the pushes: some open them, some read the conversation.
		"-push-feed", "http://"+o.fcmAddr+"/sandbox", "-open-rate", "0.35", "-push-read-rate", "0.5",
		"-seed", strconv.FormatInt(time.Now().Unix(), 10), "-id-prefix", "demo"+randomHex(4), "-progress", "0"); err != nil {
		return err
	}
	d.banner(link)
	if o.duration > 0 { // counted from here, once the traffic flows
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	return d.watch(ctx, rdb)
}

// demoShards is the demo's number of shard streams, the services' default.
const demoShards = keys.DefaultShards

// signInLink asks `report sessions sign-in-link` for a link that signs
// the browser in as the demo's admin, once, and opens the dashboard on
// the last quarter of an hour, live.
func (d *demo) signInLink(ctx context.Context, common []string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "report"), "sessions", "sign-in-link",
		"-role", "admin", "-ttl", "12h", "-url", "http://"+d.o.reportAddr, "-next", dashboardPage)
	cmd.Env = append(serviceEnv(os.Environ()), common...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("report sessions sign-in-link: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// dashboardPage is the dashboard on a range that fits a demo of minutes.
const dashboardPage = "/?range=15m&step=minute&live=1"

// banner prints where to look and a "try it" card: two events to paste
// into redis-cli that register a device and send it a message, and the
// sandbox link that shows the push once its reminder is due.
func (d *demo) banner(link string) {
	o := d.o
	ks := keys.New(o.prefix, demoShards)
	user, conv := "you-"+randomHex(3), "try-it-"+randomHex(3)
	token := sandbox.NewDeviceToken(event.PlatformFCM)
	now := time.Now().UnixMilli()
	ids := "tryit-" + randomHex(4)
	device := fmt.Sprintf(`{"v":1,"type":"device.registered","id":"%s-1","ts":%d,"user":"%s","platform":"fcm","token":"%s"}`,
		ids, now, user, token)
	message := fmt.Sprintf(`{"v":1,"type":"message.sent","id":"%s-2","ts":%d,"conversation":"%s","message":"m1","sender":"alice","recipients":["%s"],"preview":"Hello from redis-cli"}`,
		ids, now, conv, user)
	first, _, _ := strings.Cut(o.stages, ",")
	d.say("")
	d.say("Nudge is running.")
	d.say("")
	d.say("  Dashboard (this link signs your browser in once, as admin; valid 12 h):")
	d.say("    %s", link)
	d.say("  Another browser: %s sessions sign-in-link -role admin -url http://%s \\", filepath.Join(d.bin, "report"), o.reportAddr)
	d.say("    -redis-url %s -prefix %s", o.redisURL, o.prefix)
	d.say("  Queues (asynqmon, after signing in): http://%s/queues", o.reportAddr)
	d.say("  Logs: %s    Stop: Ctrl-C", d.logs)
	d.say("")
	d.say("  Try it. The demo's settings: prefix %s, %d shards,", o.prefix, demoShards)
	d.say("    Redis %s", redactURL(o.redisURL))
	d.say("    PostgreSQL %s", redactURL(o.dbURL))
	d.say("  Register a device and send it a message:")
	d.say("")
	d.say("    redis-cli -u %s XADD '%s' '*' event '%s'", o.redisURL, ks.Stream(ks.Shard(user)), device)
	d.say("    redis-cli -u %s XADD '%s' '*' event '%s'", o.redisURL, ks.Stream(ks.Shard(conv)), message)
	d.say("")
	d.say("  %s stays offline and unread, so its reminder is pushed %s later. The push:", user, first)
	d.say("    http://%s/sandbox/deliveries?token=%s", o.fcmAddr, token)
	d.say("  (docs/events.md shows every event with the prefix nudge: use %s and these", o.prefix)
	d.say("  stream names here; an event id is applied once, so change ids to send again)")
	d.say("")
}

// redactURL hides a URL's password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// anyPort serves each process's metrics on a port of its own (logged as
// "metrics server listening"), so two ingest processes do not collide.
const anyPort = "-metrics-addr=127.0.0.1:0"

// watch prints two summary lines every five seconds until ctx is done,
// then the final summary.
func (d *demo) watch(ctx context.Context, rdb *redis.Client) error {
	db, err := pgx.Connect(ctx, d.o.dbURL)
	if err != nil {
		return err
	}
	defer db.Close(context.Background())
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	start := time.Now()
	var last totals
	lastAt := start
	for {
		select {
		case <-ctx.Done():
			// A connection of its own: the one of the ticks may have been
			// closed by ctx ending during a query.
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			fdb, err := pgx.Connect(cctx, d.o.dbURL)
			if err != nil {
				return err
			}
			defer fdb.Close(context.Background())
			final, ferr := readTotals(cctx, rdb, fdb, d.o.prefix, d.o.fcmAddr)
			d.say("")
			d.say("In all, after %s:", time.Since(start).Round(time.Second))
			for _, line := range final.lines() {
				d.say("%s", line)
			}
			if d.o.check {
				return check(final, ferr)
			}
			return nil
		case <-t.C:
		}
		for _, p := range d.procs {
			select {
			case err := <-p.done:
				return fmt.Errorf("%s exited (%v); see %s", p.name, err, filepath.Join(d.logs, p.name+".log"))
			default:
			}
		}
		cur, err := readTotals(ctx, rdb, db, d.o.prefix, d.o.fcmAddr)
		if err != nil {
			if ctx.Err() == nil { // else the demo is ending: the final summary follows
				d.say("summary: %v", err)
			}
			continue
		}
		now := time.Now()
		for _, line := range summary(now.Sub(start), cur, last, now.Sub(lastAt)) {
			d.say("%s", line)
		}
		last, lastAt = cur, now
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
