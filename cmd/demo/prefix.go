package main

// The demo's key prefix: claimed with a marker so that a demo never
// clears keys it did not write, and cleared at the end.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/keys"
)

// marker is the key that says the demo made its prefix.
func marker(prefix string) string { return keys.New(prefix, demoShards).DemoMarker() }

// claimPrefix makes the demo's prefix its own: one it made before is
// cleared of the last run's keys; one it did not make must hold no key,
// else the demo refuses to run (it would delete or mix with someone's
// data).
func (d *demo) claimPrefix(ctx context.Context, rdb *redis.Client) error {
	o := d.o
	mine, err := rdb.Exists(ctx, marker(o.prefix)).Result()
	if err != nil {
		return fmt.Errorf("redis %s: %w", redactURL(o.redisURL), err)
	}
	if mine == 0 {
		for _, p := range d.patterns() {
			iter := rdb.Scan(ctx, 0, p+"*", 1000).Iterator()
			if iter.Next(ctx) {
				return fmt.Errorf("the prefix %q holds keys the demo did not make (%s, ...): the demo deletes its keys, "+
					"so it runs only on a prefix of its own: choose another -prefix", o.prefix, iter.Val())
			}
			if err := iter.Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
		}
	} else if err := clearPrefix(ctx, rdb, d.patterns()...); err != nil {
		return err
	}
	return rdb.Set(ctx, marker(o.prefix), "the Nudge demo made this prefix", 0).Err()
}

// patterns are the key patterns of the demo's prefix and queue.
func (d *demo) patterns() []string {
	return []string{d.o.prefix + ":", keys.AsynqQueue(d.o.prefix + "-reminders")}
}

// cleanUp deletes the demo's Redis keys, its marker last, and says what
// it leaves.
func (d *demo) cleanUp(rdb *redis.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := clearPrefix(ctx, rdb, d.patterns()...); err != nil {
		return err
	}
	// asynq lists every queue it has seen; its servers' keys expire.
	if err := rdb.SRem(ctx, keys.AsynqQueues, d.o.prefix+"-reminders").Err(); err != nil {
		return fmt.Errorf("forget the demo's asynq queue: %w", err)
	}
	if err := rdb.Del(ctx, marker(d.o.prefix)).Err(); err != nil {
		return fmt.Errorf("remove the demo's marker %s: %w", marker(d.o.prefix), err)
	}
	d.say("removed the demo's Redis keys (prefix %s); left, for you to look at or delete:", d.o.prefix)
	d.say("  the PostgreSQL database %s (its counters: report print)", redactURL(d.o.dbURL))
	d.say("  %s (binaries, logs)", d.o.dir)
	return nil
}

// clearPrefix deletes the keys of patterns (a prefix each), but the
// marker of the demo's prefix.
func clearPrefix(ctx context.Context, rdb *redis.Client, patterns ...string) error {
	for _, p := range patterns {
		iter := rdb.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if k := iter.Val(); !strings.HasSuffix(k, strings.TrimPrefix(marker(""), ":")) {
				rdb.Del(ctx, k)
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("clear the demo's keys: %w", err)
		}
	}
	return nil
}
