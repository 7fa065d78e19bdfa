package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
)

// sendLocks are the send locks' operations (datastore.Lease): a user's lock
// (keys.Keyspace.SendLock) holds the token of the run that took it.
var sendLocks = datastore.NewLease("worker")

// lockTTL is how long a send lock lives unless renewed: how long a crashed
// worker's lock holds its user. A live worker renews its locks every
// lockTTL/3 for as long as it holds them, however long its pushes take (a
// provider that stalls keeps a batch's pushes waiting out their 30 s
// timeouts).
const lockTTL = 15 * time.Second

// lockAll takes the send lock of each user (one send per user at a time:
// a reminder of the same user running elsewhere may take another into its
// digest), in one pipeline. It returns the users it locked and a function
// that unlocks them; a user whose lock is held elsewhere is left out. The
// locks are renewed until unlock is called.
func (w *Worker) lockAll(ctx context.Context, users []string) (map[string]bool, func(), error) {
	ks := w.cfg.Keyspace
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	pipe := w.rdb.Pipeline()
	cmds := make([]*redis.BoolCmd, len(users))
	for i, u := range users {
		cmds[i] = pipe.SetNX(ctx, ks.SendLock(ks.Shard(u), u), token, lockTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, func() {}, fmt.Errorf("send locks: %w", err)
	}
	got := make(map[string]bool, len(users))
	held := map[int][]string{} // locks taken, by shard: one script call each renews or releases them
	for i, u := range users {
		if cmds[i].Val() {
			got[u] = true
			shard := ks.Shard(u)
			held[shard] = append(held[shard], ks.SendLock(shard, u))
		}
	}
	if len(held) == 0 {
		return got, func() {}, nil
	}
	stop := make(chan struct{})
	var renewing sync.WaitGroup
	renewing.Go(func() { w.renewLocks(ctx, held, token, stop) })
	unlock := func() {
		close(stop)
		renewing.Wait()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		pipe := w.rdb.Pipeline()
		for _, locks := range held {
			sendLocks.ReleaseIn(ctx, pipe, locks, token)
		}
		_, _ = pipe.Exec(ctx)
	}
	return got, unlock, nil
}

// renewLocks extends locks every lockTTL/3 until stop is closed. A renewal
// Redis refuses is tried again at the next tick; a lock lost meanwhile (it
// expired, Redis restarted) is not taken back: the claim's intents still
// keep each device from a second push of the same reminder.
func (w *Worker) renewLocks(ctx context.Context, locks map[int][]string, token string, stop <-chan struct{}) {
	tick := time.NewTicker(lockTTL / 3)
	defer tick.Stop()
	ctx = context.WithoutCancel(ctx)
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, lockTTL/3)
		pipe := w.rdb.Pipeline()
		for _, ks := range locks {
			sendLocks.RenewIn(rctx, pipe, ks, token, lockTTL)
		}
		if _, err := pipe.Exec(rctx); err != nil {
			w.log.Warn("renewing send locks", "shards", len(locks), "err", err)
		}
		cancel()
	}
}
