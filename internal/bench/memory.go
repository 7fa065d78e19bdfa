package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// measureMemory opens one unread episode for each of n users (a message
// from a sender in a direct conversation of their own), then has every
// user come online and read. It weighs the keys with MEMORY USAGE:
//   - per open episode: the episode hashes and badge hashes, the state
//     that lives exactly as long as the episodes;
//   - per idle user (online, everything read): every key left but the
//     streams, the counters (the flusher's to move and delete) and the
//     dedupe windows (bounded by time, not by users), divided by n; that
//     is the user's presence and their conversation's last message and
//     recent list.
func measureMemory(ctx context.Context, cfg Config, rdb *redis.Client, res *Result) error {
	n := cfg.size(5000, 2000)
	prefix := newPrefix("mem")
	defer deletePrefix(context.Background(), rdb, prefix)
	ks := keys.New(prefix, 8)
	c, err := ingest.New(rdb, ingest.Config{Keyspace: ks, Consumer: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(runCtx) }()

	p := producer.New(rdb, producer.Config{Keyspace: ks})
	ts := time.Now().UnixMilli()
	publish := func(gen func(i int) *event.Event) error {
		want := c.Stats().Applied.Load() + int64(n)
		evs := make([]*event.Event, 0, 500)
		for i := range n {
			evs = append(evs, gen(i))
			if len(evs) == cap(evs) || i == n-1 {
				if _, err := p.PublishBatch(ctx, evs); err != nil {
					return err
				}
				evs = evs[:0]
			}
		}
		for c.Stats().Applied.Load() < want {
			select {
			case err := <-errc:
				return fmt.Errorf("consumer stopped: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
		}
		return nil
	}
	user := func(i int) string { return "user-" + strconv.Itoa(i) }
	conv := func(i int) string { return "direct-" + strconv.Itoa(i) }
	if err := publish(func(i int) *event.Event {
		return &event.Event{V: 1, Type: event.TypeMessage, ID: "m" + strconv.Itoa(i), TS: ts, Conversation: conv(i),
			Message: "msg-" + strconv.Itoa(i), Sender: "friend-" + strconv.Itoa(i), Recipients: []string{user(i)},
			Preview: "are we still on for tonight?"}
	}); err != nil {
		return err
	}
	open, err := weigh(ctx, rdb, prefix)
	if err != nil {
		return err
	}
	if open["ep"].keys != n {
		return fmt.Errorf("%d episodes open, want %d", open["ep"].keys, n)
	}
	res.RedisBytesPerEpisode = round(float64(open["ep"].bytes+open["badge"].bytes)/float64(n), 0)

	if err := publish(func(i int) *event.Event {
		return &event.Event{V: 1, Type: event.TypePresence, ID: "p" + strconv.Itoa(i), TS: ts, User: user(i), Status: "online"}
	}); err != nil {
		return err
	}
	if err := publish(func(i int) *event.Event {
		return &event.Event{V: 1, Type: event.TypeRead, ID: "r" + strconv.Itoa(i), TS: ts, Conversation: conv(i), User: user(i)}
	}); err != nil {
		return err
	}
	idle, err := weigh(ctx, rdb, prefix)
	if err != nil {
		return err
	}
	if idle["ep"].keys != 0 {
		return fmt.Errorf("%d episodes left open after the reads", idle["ep"].keys)
	}
	var bytes int64
	for kind, w := range idle {
		switch kind {
		case "events", "cnt", "cntidx", "seen", "dau", "dauidx", "lease", "members":
		default:
			bytes += w.bytes
		}
	}
	res.RedisBytesPerIdleUser = round(float64(bytes)/float64(n), 0)
	cfg.Logger.Info("memory", "open", open, "idle", idle)
	cancel()
	return <-errc
}

// weight is the keys of a kind and their MEMORY USAGE.
type weight struct {
	keys  int
	bytes int64
}

func (w weight) String() string { return fmt.Sprintf("%d keys %d B", w.keys, w.bytes) }

// weigh sums MEMORY USAGE by kind of key (the part after the shard tag, up
// to the next colon) over the keys under prefix.
func weigh(ctx context.Context, rdb *redis.Client, prefix string) (map[string]weight, error) {
	out := map[string]weight{}
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	flush := func() error {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return err
		}
		for i, k := range batch {
			kind := kindOf(k)
			w := out[kind]
			w.keys++
			w.bytes += cmds[i].Val()
			out[kind] = w
		}
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	return out, flush()
}

// kindOf returns the kind of a Nudge key: "ep" of "p:{s3}:ep:c|u".
func kindOf(key string) string {
	if _, rest, ok := strings.Cut(key, "}:"); ok {
		kind, _, _ := strings.Cut(rest, ":")
		return kind
	}
	return key
}
