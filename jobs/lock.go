package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
)

// unlockScript deletes a lock if it still holds our token.
//
// KEYS[1] lock; ARGV[1] token.
var unlockScript = datastore.NewScript("worker", `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// lockTTL bounds how long a crashed worker's send lock holds its user.
const lockTTL = time.Minute

// lockAll takes the send lock of each user (one send per user at a time:
// a reminder of the same user running elsewhere may take another into its
// digest), in one pipeline. It returns the users it locked and a function
// that unlocks them; a user whose lock is held elsewhere is left out.
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
	for i, u := range users {
		if cmds[i].Val() {
			got[u] = true
		}
	}
	unlock := func() {
		if len(got) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		pipe := w.rdb.Pipeline()
		for u := range got {
			unlockScript.Eval(ctx, pipe, []string{ks.SendLock(ks.Shard(u), u)}, token)
		}
		_, _ = pipe.Exec(ctx)
	}
	return got, unlock, nil
}
