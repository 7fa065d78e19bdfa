package flush

import (
	"context"
	"fmt"
	"time"
)

// lease takes or renews the lease for owner and reports whether owner
// holds it.
func (f *Flusher) lease(ctx context.Context, owner string) (bool, error) {
	n, err := leaseScript.Run(ctx, f.rdb, []string{f.cfg.Keyspace.FlusherLease()}, owner, f.cfg.LeaseTTL.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("flush: lease: %w", err)
	}
	return n == 1, nil
}

// releaseLease gives the lease up, so that another replica need not wait
// for it to expire.
func (f *Flusher) releaseLease(owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := releaseScript.Run(ctx, f.rdb, []string{f.cfg.Keyspace.FlusherLease()}, owner).Err(); err != nil {
		f.log.Warn("flush: release lease", "err", err)
	}
}
