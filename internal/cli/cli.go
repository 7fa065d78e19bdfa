// Package cli is what Nudge's commands share: how a command starts and
// stops (Main), how its flags are read (Parse) and what every exit code
// means, and the settings every long-running service has (Service).
//
// A command's main is one line:
//
//	func main() {
//		cli.Main("flusher", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout) })
//	}
//
// and its run, which tests call directly, reads its flags with Parse. For
// -h, Parse prints the settings and returns flag.ErrHelp, which run
// returns as it is: the command exits 0 (ExitCode).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/nudgehq/nudge/internal/flagenv"
)

// ErrUsage marks an error in how a command was called: a flag that does
// not exist or does not parse, a bad value, a missing setting. The command
// exits 2 for it.
var ErrUsage = errors.New("usage")

// Usagef returns a usage error (ErrUsage) with the message.
func Usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// Usage marks err, if not nil, as a usage error.
func Usage(err error) error {
	if err == nil || errors.Is(err, ErrUsage) || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUsage, err)
}

// Main runs a command: run gets a context that the first SIGINT or SIGTERM
// cancels, so that the command finishes what it is doing and returns; a
// second signal stops the process at once (the signals' default action is
// back). Then it exits with ExitCode.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	err := run(ctx)
	stop()
	os.Exit(ExitCode(os.Stderr, name, err))
}

// Hangups returns a channel that receives SIGHUP, the signal that asks a
// service to reload its files, until stop is called.
func Hangups() (hup <-chan os.Signal, stop func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	return c, func() { signal.Stop(c) }
}

// Run is Main for a command whose run takes its arguments, environment
// and standard output: run(ctx, os.Args[1:], os.Getenv, os.Stdout), the
// form its tests call.
func Run(name string, run func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error) {
	Main(name, func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout) })
}

// GCPercent sets the garbage collector's target percentage
// (runtime/debug.SetGCPercent) to percent, unless getenv("GOGC") is set:
// the operator's GOGC wins. It returns the percentage in force.
//
// A service whose allocations are nearly all short-lived (one push, one
// batch) pays for each collection with a mark of its whole live heap, and
// collects every time the heap has grown by GOGC percent of it: a higher
// percentage trades a larger heap for fewer collections. GOMEMLIMIT, which
// the Kubernetes manifests set from the container's memory limit, still
// bounds the heap: near the limit the collector runs as often as it must.
func GCPercent(getenv func(string) string, percent int) int {
	if getenv("GOGC") != "" {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(percent)
	return percent
}

// ExitCode returns the exit code of a command that returned err, and
// writes "name: err" to w for an error: 0 for nil or flag.ErrHelp (-h
// printed the settings), 2 for a usage error (ErrUsage), 1 for any other.
func ExitCode(w io.Writer, name string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(w, "%s: %v\n", name, err)
	if errors.Is(err, ErrUsage) {
		return 2
	}
	return 1
}

// Parse reads fs's flags from args, and from the environment for those
// not given (flagenv: -redis-url from NUDGE_REDIS_URL, or the variables fs
// names). It returns flag.ErrHelp for -h (the settings are printed), a
// usage error for a flag that does not exist or parse, and one for
// arguments after the flags unless the command takes some (takesArgs).
func Parse(fs *flagenv.FlagSet, args []string, getenv func(string) string, takesArgs bool) error {
	return parse(fs.FlagSet, takesArgs, fs.ParseEnv(args, getenv))
}

func parse(fs *flag.FlagSet, takesArgs bool, err error) error {
	if err != nil {
		return Usage(err)
	}
	if !takesArgs && fs.NArg() > 0 {
		return Usagef("unexpected arguments %q", fs.Args())
	}
	return nil
}
