// Command publish adds events to Nudge's shard streams from a file or
// standard input: one JSON event per line (NDJSON), or one JSON array of
// events. Each event is validated against the contract and sent to the
// shard of its routing key. With -raw, lines are published as they are, for
// testing how consumers handle bad input.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

func main() {
	cli.Main("publish", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout) })
}

type options struct {
	redis  datastore.Redis
	prefix string
	shards int
	file   string
	raw    bool
	rawKey string
	batch  int
	guard  bool
}

// flags returns the command's flag set, writing into o.
func flags(o *options) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("publish", "publish: add events to Nudge's streams", flagenv.EnvName)
	o.redis.Register(fs.FlagSet, datastore.DefaultRedisURL)
	fs.StringVar(&o.prefix, "prefix", keys.DefaultPrefix, "key prefix")
	fs.IntVar(&o.shards, "shards", keys.DefaultShards, "number of shard streams")
	fs.StringVar(&o.file, "file", "-", "file of events (NDJSON or a JSON array); - is standard input")
	fs.BoolVar(&o.raw, "raw", false, "publish each line as is, without validating it (to the shard of -key)")
	fs.StringVar(&o.rawKey, "key", "raw", "routing key of -raw lines")
	fs.IntVar(&o.batch, "batch", 500, "events per pipelined batch")
	fs.BoolVar(&o.guard, "install-guard", false, "publish nothing: load the producer guard into Redis (the function nudge_publish, for producers in other languages: docs/events.md)")
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	var o options
	fs := flags(&o)
	if err := cli.Parse(fs, args, getenv, true); err != nil {
		return err
	}
	ropt, err := o.redis.Options()
	if err != nil {
		return err
	}
	if o.guard {
		rdb := ropt.Client()
		defer rdb.Close()
		if err := producer.InstallGuard(ctx, rdb); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "loaded the producer guard: FCALL nudge_publish 1 <stream> <event JSON> [<maxlen>] (docs/events.md)")
		return nil
	}
	prefix, shards, file, raw, rawKey, batch := &o.prefix, &o.shards, &o.file, &o.raw, &o.rawKey, &o.batch
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	rdb := ropt.Client()
	defer rdb.Close()
	p := producer.New(rdb, producer.Config{Keyspace: keys.New(*prefix, *shards)})

	if *raw {
		n := 0
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			if _, err := p.PublishRaw(ctx, *rawKey, sc.Bytes()); err != nil {
				return err
			}
			n++
		}
		if err := sc.Err(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "published %s\n", plural(int(n), "raw entry", "raw entries"))
		return nil
	}

	evs, err := readEvents(in)
	if err != nil {
		return err
	}
	for i := 0; i < len(evs); i += *batch {
		end := min(i+*batch, len(evs))
		if _, err := p.PublishBatch(ctx, evs[i:end]); err != nil {
			return fmt.Errorf("events %d to %d: %w", i+1, end, err)
		}
	}
	fmt.Fprintf(stdout, "published %s\n", plural(len(evs), "event", "events"))
	return nil
}

// readEvents reads a JSON array of events or one event per line, and
// validates all of them before anything is published.
func readEvents(in io.Reader) ([]*event.Event, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(data)
	var raws []json.RawMessage
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, fmt.Errorf("read array: %w", err)
		}
	} else {
		for _, line := range bytes.Split(data, []byte("\n")) {
			if len(bytes.TrimSpace(line)) > 0 {
				raws = append(raws, line)
			}
		}
	}
	evs := make([]*event.Event, 0, len(raws))
	var errs []error
	for i, r := range raws {
		e, err := event.Decode(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("event %d: %w", i+1, err))
			continue
		}
		evs = append(evs, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return evs, nil
}

// plural says n things: "1 event", "2 events".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
