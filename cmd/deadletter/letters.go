package main

// The subcommands: list, show, replay and drop dead letters.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/streamid"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// name is a dead letter's shard and id.
type name struct {
	shard int
	id    string
}

func (n name) String() string { return strconv.Itoa(n.shard) + "/" + n.id }

func parseName(s string, shards int) (name, error) {
	sh, id, ok := strings.Cut(s, "/")
	k, err := strconv.Atoi(sh)
	if !ok || err != nil || !streamID.MatchString(id) {
		return name{}, fmt.Errorf("%q is not SHARD/ID, e.g. 3/1767225600000-0 (as deadletter list prints)", s)
	}
	if k < 0 || k >= shards {
		return name{}, fmt.Errorf("%q: shard %d is not one of 0 to %d (-shards %d)", s, k, shards-1, shards)
	}
	return name{k, id}, nil
}

type tool struct {
	rdb redis.UniversalClient
	ks  keys.Keyspace
	o   options
	out io.Writer
}

// letter is a dead letter as stored.
type letter struct {
	name
	values map[string]any
}

func (l letter) get(field string) string { v, _ := l.values[field].(string); return v }

func (d *tool) list(ctx context.Context) error {
	if d.o.limit < 1 {
		return fmt.Errorf("%w: -limit must be at least 1", cli.ErrUsage)
	}
	shards := []int{}
	if d.o.shard >= 0 {
		if d.o.shard >= d.ks.Shards {
			return fmt.Errorf("%w: -shard %d: the shards are 0 to %d", cli.ErrUsage, d.o.shard, d.ks.Shards-1)
		}
		shards = append(shards, d.o.shard)
	} else {
		for s := range d.ks.Shards {
			shards = append(shards, s)
		}
	}
	var all []letter
	total := int64(0)
	for _, s := range shards {
		n, err := d.rdb.XLen(ctx, d.ks.DeadLetter(s)).Result()
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		total += n
		// Newest first, a page at a time, until limit match (the stream
		// is capped, so this ends).
		end := "+"
		found := 0
		for found < d.o.limit {
			page, err := d.rdb.XRevRangeN(ctx, d.ks.DeadLetter(s), end, "-", 200).Result()
			if err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			for _, m := range page {
				l := letter{name{s, m.ID}, m.Values}
				if d.o.reason == "" || l.get("reason") == d.o.reason {
					all = append(all, l)
					found++
				}
			}
			if len(page) < 200 {
				break
			}
			end = "(" + page[len(page)-1].ID
		}
	}
	sort.Slice(all, func(i, j int) bool { return streamid.Less(all[j].id, all[i].id) })
	if len(all) > d.o.limit {
		all = all[:d.o.limit]
	}
	if len(all) == 0 {
		what := "no dead letters"
		if d.o.reason != "" {
			what += " of reason " + d.o.reason
		}
		fmt.Fprintf(d.out, "%s under the prefix %q (%d shards)\n", what, d.ks.Prefix, d.ks.Shards)
		return nil
	}
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEAD LETTER\tAT (UTC)\tREASON\tENTRY\tDETAIL")
	for _, l := range all {
		at := l.get("at")
		if ms, err := strconv.ParseInt(at, 10, 64); err == nil {
			at = time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.name, at, l.get("reason"), l.get("entry"), cut(l.get("detail"), 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "%d shown of %d dead letters; deadletter show SHARD/ID for one\n", len(all), total)
	return nil
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// read returns one dead letter.
func (d *tool) read(ctx context.Context, n name) (letter, error) {
	ms, err := d.rdb.XRange(ctx, d.ks.DeadLetter(n.shard), n.id, n.id).Result()
	if err != nil {
		return letter{}, fmt.Errorf("redis: %w", err)
	}
	if len(ms) == 0 {
		return letter{}, fmt.Errorf("no dead letter %s in %s (dropped, replayed, or trimmed: the stream keeps the newest)", n, d.ks.DeadLetter(n.shard))
	}
	return letter{n, ms[0].Values}, nil
}

func (d *tool) show(ctx context.Context, n name) error {
	l, err := d.read(ctx, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "dead letter %s\n", n)
	seen := map[string]bool{}
	field := func(f string) {
		v := l.get(f)
		switch f {
		case "at":
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				v += " (" + time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) + ")"
			}
		case "payload":
			var b bytes.Buffer
			if json.Indent(&b, []byte(v), "  ", "  ") == nil {
				v = b.String()
			}
		}
		fmt.Fprintf(d.out, "%-11s %s\n", f+":", v)
	}
	for _, f := range fieldOrder {
		if _, ok := l.values[f]; ok {
			field(f)
			seen[f] = true
		}
	}
	var rest []string
	for f := range l.values {
		if !seen[f] {
			rest = append(rest, f)
		}
	}
	sort.Strings(rest)
	for _, f := range rest {
		field(f)
	}
	return nil
}

func (d *tool) replay(ctx context.Context, n name) error {
	l, err := d.read(ctx, n)
	if err != nil {
		return err
	}
	stored := l.get("payload")
	payload := stored
	switch d.o.file {
	case "":
		switch {
		case strings.Contains(l.get("detail"), "truncated"):
			return errors.New("the stored payload was cut to fit the dead letter: write the whole event into a file and pass -file")
		case redacted.MatchString(stored):
			return errors.New("the stored payload has its device tokens redacted: write the event with its real tokens into a file and pass -file")
		}
	case "-":
		b, err := io.ReadAll(io.LimitReader(os.Stdin, event.MaxEventBytes+1))
		if err != nil {
			return err
		}
		payload = string(b)
	default:
		b, err := os.ReadFile(d.o.file)
		if err != nil {
			return fmt.Errorf("%w: -file: %w", cli.ErrUsage, err)
		}
		payload = string(b)
	}
	ev, err := event.Decode([]byte(strings.TrimSpace(payload)))
	if err != nil {
		if d.o.file == "" {
			return fmt.Errorf("the stored event is still bad (%w): fix it into a file and pass -file", err)
		}
		return fmt.Errorf("the fixed event is bad: %w", err)
	}
	// The original id keeps dedupe: ingest applies the event once, and a
	// producer's retry of it later is a duplicate.
	var orig struct {
		ID any `json:"id"`
	}
	if json.Unmarshal([]byte(stored), &orig) == nil {
		if id, ok := orig.ID.(string); ok && id != "" && id != ev.ID {
			return fmt.Errorf("the fixed event's id %q is not the dead letter's %q: keep the original id, so that "+
				"the event is applied once and a producer's retry of it is still a duplicate", ev.ID, id)
		}
	}
	p := producer.New(d.rdb, producer.Config{Keyspace: d.ks})
	entry, err := p.Publish(ctx, ev)
	if err != nil {
		return err
	}
	if err := d.rdb.XDel(ctx, d.ks.DeadLetter(n.shard), n.id).Err(); err != nil {
		return fmt.Errorf("replayed %s as entry %s, but the dead letter stays (drop it): %w", n, entry, err)
	}
	fmt.Fprintf(d.out, "replayed %s: event %s (%s) is entry %s of %s; dead letter dropped\n",
		n, ev.ID, ev.Type, entry, d.ks.Stream(d.ks.Shard(ev.RoutingKey())))
	return nil
}

func (d *tool) drop(ctx context.Context, names []name) error {
	var missing []string
	dropped := 0
	for _, n := range names {
		k, err := d.rdb.XDel(ctx, d.ks.DeadLetter(n.shard), n.id).Result()
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		if k == 0 {
			missing = append(missing, n.String())
		}
		dropped += int(k)
	}
	fmt.Fprintf(d.out, "dropped %d dead letter(s)\n", dropped)
	if len(missing) > 0 {
		return fmt.Errorf("no dead letter %s", strings.Join(missing, ", "))
	}
	return nil
}
