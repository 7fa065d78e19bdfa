// Command deadletter lists, shows, replays and drops the entries ingest
// could not apply. Each shard has a dead-letter stream (keys.DeadLetter)
// holding, per entry, why (reason, detail), where it came from (stream,
// entry, consumer, deliveries, at) and its payload, with device tokens
// redacted (docs/events.md, "What happens to bad input").
//
//	deadletter list [flags]                    the newest dead letters
//	deadletter show [flags] SHARD/ID           one, every field, its payload indented
//	deadletter replay [flags] [-file F] SHARD/ID  publish its event again, then drop it
//	deadletter drop [flags] SHARD/ID...        delete dead letters
//
// A dead letter is named by its shard and its id in that shard's
// dead-letter stream, as list prints it: 3/1767225600000-0.
//
// Replay publishes the event to the shard of its routing key, as any
// producer would, with its original id: ingest applies it once, and a
// producer that re-publishes the same event later is still a duplicate.
// The stored payload is replayed only if it is whole and valid (a dead
// letter of wrong_shard, max_deliveries or apply_failed, after the cause
// was fixed); else fix it into a file and pass -file. A payload whose
// tokens were redacted is never replayed as is.
package main

import (
	"context"
	"fmt"
	"io"
	"regexp"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/keys"
)

func main() {
	cli.Run("deadletter", run)
}

const usage = `usage:
  deadletter list [flags]                       the newest dead letters, newest first
  deadletter show [flags] SHARD/ID              one dead letter: every field, its payload indented
  deadletter replay [flags] [-file F] SHARD/ID  publish its event again (fixed, from F), then drop it
  deadletter drop [flags] SHARD/ID...           delete dead letters

SHARD/ID is what list prints, e.g. 3/1767225600000-0. Run "deadletter list -h" for the flags.
`

type options struct {
	redis  datastore.Redis
	prefix string
	shards int
	// list
	shard  int
	reason string
	limit  int
	// replay
	file string
}

// flags returns the flag set of a subcommand, writing into o.
func flags(cmd string, o *options) *flagenv.FlagSet {
	summary := map[string]string{
		"list":   "the newest dead letters of every shard, newest first",
		"show":   "one dead letter: every field, its payload indented",
		"replay": "publish a dead letter's event again, with its original id, then drop the dead letter",
		"drop":   "delete dead letters",
	}[cmd]
	fs := flagenv.NewFlagSet("deadletter "+cmd, "deadletter "+cmd+": "+summary, connEnv)
	o.redis.Register(fs.FlagSet, datastore.DefaultRedisURL)
	fs.StringVar(&o.prefix, "prefix", keys.DefaultPrefix, "key prefix (ingest's)")
	fs.IntVar(&o.shards, "shards", keys.DefaultShards, "number of shard streams (ingest's)")
	switch cmd {
	case "list":
		fs.IntVar(&o.shard, "shard", -1, "only this shard (-1: every shard)")
		fs.StringVar(&o.reason, "reason", "", "only this reason, e.g. invalid_json")
		fs.IntVar(&o.limit, "limit", 50, "at most this many")
	case "replay":
		fs.StringVar(&o.file, "file", "", "the fixed event (JSON), with the dead letter's event id; - is standard input (default: the stored payload, if whole and valid)")
	}
	return fs
}

// connEnv names the variables of the connection flags only: a NUDGE_FILE
// or NUDGE_REASON set for another program must not steer this one.
var connEnv = flagenv.Only("redis-url", "redis-cluster", "redis-ca-file", "prefix", "shards")

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("%w: deadletter takes a command: list, show, replay or drop", cli.ErrUsage)
	}
	cmd := args[0]
	switch cmd {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "list", "show", "replay", "drop":
	default:
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("%w: unknown command %q", cli.ErrUsage, cmd)
	}
	var o options
	fs := flags(cmd, &o)
	fs.SetOutput(stdout)
	if err := cli.Parse(fs, args[1:], getenv, true); err != nil {
		return err
	}
	if o.shards < 1 {
		return fmt.Errorf("%w: -shards must be at least 1", cli.ErrUsage)
	}
	ropt, err := o.redis.Options()
	if err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	d := &tool{ks: keys.New(o.prefix, o.shards), o: o, out: stdout}
	var names []name
	if cmd != "list" {
		if fs.NArg() == 0 || (cmd != "drop" && fs.NArg() > 1) {
			return fmt.Errorf("%w: deadletter %s takes %s", cli.ErrUsage, cmd, map[bool]string{true: "SHARD/ID...", false: "one SHARD/ID"}[cmd == "drop"])
		}
		for _, a := range fs.Args() {
			n, err := parseName(a, o.shards)
			if err != nil {
				return fmt.Errorf("%w: %w", cli.ErrUsage, err)
			}
			names = append(names, n)
		}
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", cli.ErrUsage, fs.Args())
	}
	rdb := ropt.Client()
	defer rdb.Close()
	d.rdb = rdb
	switch cmd {
	case "list":
		return d.list(ctx)
	case "show":
		return d.show(ctx, names[0])
	case "replay":
		return d.replay(ctx, names[0])
	default:
		return d.drop(ctx, names)
	}
}

var streamID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// fieldOrder is the order show prints a dead letter's fields in.
var fieldOrder = []string{"reason", "detail", "stream", "entry", "deliveries", "consumer", "at", "payload"}

// redacted finds a token RedactTokens shortened: "…(<length>)" at the end
// of a "token" value.
var redacted = regexp.MustCompile(`"token"\s*:\s*"[^"]*…\([0-9]+\)"`)
