package flush

import (
	"context"
	"fmt"
	"time"

	"github.com/nudgehq/nudge/internal/datastore"
)

// leases are the flusher's lease operations (datastore.Lease).
var leases = datastore.NewLease("flusher")

// lease takes or renews the lease for owner and reports whether owner
// holds it.
func (f *Flusher) lease(ctx context.Context, owner string) (bool, error) {
	ok, err := leases.Acquire(ctx, f.rdb, f.cfg.Keyspace.FlusherLease(), owner, f.cfg.LeaseTTL)
	if err != nil {
		return false, fmt.Errorf("flush: lease: %w", err)
	}
	return ok, nil
}

// releaseLease gives the lease up, so that another replica need not wait
// for it to expire.
func (f *Flusher) releaseLease(owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := leases.Release(ctx, f.rdb, f.cfg.Keyspace.FlusherLease(), owner); err != nil {
		f.log.Warn("flush: release lease", "err", err)
	}
}
