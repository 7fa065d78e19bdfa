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
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/flagenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
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
func flags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.BoolVar(&o.services, "services", true, "run scripts/services.sh first (installs and starts Redis and PostgreSQL when absent)")
	fs.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis URL")
	fs.StringVar(&o.dbURL, "database-url", "postgres://postgres@127.0.0.1:5432/nudge_demo?sslmode=disable", "PostgreSQL URL of the demo database (created if missing)")
	fs.StringVar(&o.prefix, "prefix", "nudgedemo", "Redis key prefix of the demo (its keys are cleared at start)")
	fs.Float64Var(&o.rate, "rate", 200, "simulated events per second")
	fs.DurationVar(&o.duration, "duration", 0, "stop after the traffic has run this long (0: until Ctrl-C)")
	fs.BoolVar(&o.check, "check", false, "at the end, fail unless events were applied, reminders pushed and counters flushed (needs a -duration of 80s or more, for a minute to close and be flushed)")
	fs.StringVar(&o.reportAddr, "report-addr", "127.0.0.1:8090", "listen address of the report server and dashboard")
	fs.StringVar(&o.fcmAddr, "sandbox-fcm-addr", "127.0.0.1:18085", "listen address of the push sandbox's FCM side")
	fs.StringVar(&o.apnsAddr, "sandbox-apns-addr", "127.0.0.1:18086", "listen address of the push sandbox's APNs side")
	fs.StringVar(&o.dir, "dir", "", "where binaries, credentials and logs go (default: nudge-demo in the temporary directory)")
	fs.StringVar(&o.stages, "stages", "10s,30s,2m", "reminder ladder of the demo (short, to see reminders soon)")
	fs.StringVar(&o.root, "root", ".", "the repository's root (where scripts/ and cmd/ are)")
	fs.Usage = flagenv.Usage(fs, "demo: the Nudge pipeline with simulated chat traffic and a local push sandbox")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o options
	fs := flags(&o)
	if err := flagenv.Parse(fs, args, getenv); err != nil {
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

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
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
	if err := createDatabase(ctx, o.dbURL); err != nil {
		return err
	}
	ropt, err := redis.ParseURL(o.redisURL)
	if err != nil {
		return fmt.Errorf("-redis-url: %w", err)
	}
	rdb := redis.NewClient(ropt)
	defer rdb.Close()
	if err := clearPrefix(ctx, rdb, o.prefix+":", "asynq:{"+o.prefix+"-reminders}"); err != nil {
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
	common := []string{"NUDGE_REDIS_URL=" + o.redisURL, "NUDGE_DATABASE_URL=" + o.dbURL, "NUDGE_PREFIX=" + o.prefix}
	migrate := exec.CommandContext(ctx, filepath.Join(d.bin, "migrate"), "up")
	migrate.Env = append(os.Environ(), common...)
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
	// and archive tasks (a -basic-auth reader would see them read-only).
	password := randomHex(8)
	if err := d.start("report", common, "serve", "-addr", o.reportAddr, "-admin-basic-auth", "admin:"+password, anyPort); err != nil {
		return err
	}
	if err := d.start("loadgen", common, "-rate", strconv.FormatFloat(o.rate, 'f', -1, 64), "-users", "300", "-conversations", "150",
		"-read-delay", "6s", "-read-delay-max", "60s", "-read-probability", "0.6", "-device-fraction", "0.9",
		"-seed", strconv.FormatInt(time.Now().Unix(), 10), "-id-prefix", "demo"+randomHex(4), "-progress", "0"); err != nil {
		return err
	}

	d.say("")
	d.say("Nudge is running. Dashboard: http://admin:%s@%s/?range=1h&live=1  (user admin, password %s; live counters merged in, refreshed every 15 s)", password, o.reportAddr, password)
	d.say("Queues (asynqmon, writable for admin): http://%s/queues   Push sandbox deliveries: http://%s/sandbox/deliveries", o.reportAddr, o.fcmAddr)
	d.say("Logs: %s   Stop: Ctrl-C", d.logs)
	d.say("")
	if o.duration > 0 { // counted from here, once the traffic flows
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	return d.watch(ctx, rdb)
}

// anyPort serves each process's metrics on a port of its own (logged as
// "metrics server listening"), so two ingest processes do not collide.
const anyPort = "-metrics-addr=127.0.0.1:0"

// start runs one of the built commands with its output in a log file.
func (d *demo) start(name string, env []string, args ...string) error {
	bin, _, _ := strings.Cut(name, "-") // ingest-1 runs ingest
	logf, err := os.Create(filepath.Join(d.logs, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(d.bin, bin), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the demo, which stops them in order
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		logf.Close()
	}()
	d.procs = append(d.procs, p)
	return nil
}

// stopAll stops the processes in reverse order of start: traffic first,
// then the pipeline, the sandbox last. SIGTERM, then SIGKILL after 30s.
func (d *demo) stopAll() error {
	var failed []string
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		select {
		case err := <-p.done:
			if err != nil {
				failed = append(failed, p.name+" had exited: "+err.Error())
			}
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				failed = append(failed, p.name+": "+err.Error())
			}
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			failed = append(failed, p.name+": did not stop within 30s of SIGTERM")
		}
	}
	d.say("stopped everything the demo started")
	if len(failed) > 0 {
		return fmt.Errorf("processes failed (see %s): %s", d.logs, strings.Join(failed, "; "))
	}
	return nil
}

// watch prints a summary line every two seconds until ctx is done.
func (d *demo) watch(ctx context.Context, rdb *redis.Client) error {
	db, err := pgx.Connect(ctx, d.o.dbURL)
	if err != nil {
		return err
	}
	defer db.Close(context.Background())
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	start := time.Now()
	var last totals
	lastAt := start
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			final, ferr := readTotals(cctx, rdb, db, d.o.prefix, d.o.fcmAddr)
			d.say("final: %s", final)
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
			d.say("summary: %v", err)
			continue
		}
		now := time.Now()
		rate := float64(cur.applied-last.applied) / now.Sub(lastAt).Seconds()
		d.say("%5.0fs  %6.0f events/s  applied %d  open episodes %d  reminders sent %d suppressed %d deferred %d  pushes delivered %d  last flush %s",
			now.Sub(start).Seconds(), rate, cur.applied, cur.opened-cur.closed, cur.sent, cur.suppressed, cur.deferred, cur.pushes, cur.lastFlush)
		last, lastAt = cur, now
	}
}

func check(t totals, err error) error {
	if err != nil {
		return err
	}
	var missing []string
	if t.applied == 0 {
		missing = append(missing, "no event applied")
	}
	if t.sent == 0 || t.pushes == 0 {
		missing = append(missing, "no reminder pushed")
	}
	if t.flushedRows == 0 {
		missing = append(missing, "no counter flushed to Postgres")
	}
	if len(missing) > 0 {
		return errors.New("check failed: " + strings.Join(missing, ", "))
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// createDatabase creates the demo database if it does not exist.
func createDatabase(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return fmt.Errorf("-database-url: %w", err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
	}
	return nil
}

// clearPrefix deletes the keys a previous demo left.
func clearPrefix(ctx context.Context, rdb *redis.Client, patterns ...string) error {
	for _, p := range patterns {
		iter := rdb.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("clear old demo keys: %w", err)
		}
	}
	return nil
}

func waitEnvFile(ctx context.Context, path string) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, err := os.Open(path)
		if err == nil {
			defer f.Close()
			var env []string
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
					env = append(env, line)
				}
			}
			return env, sc.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the push sandbox did not write %s", path)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
