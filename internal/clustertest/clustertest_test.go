package clustertest

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStart(t *testing.T) {
	t.Parallel()
	c := Start(t)
	if got := len(c.Addrs()); got != Masters {
		t.Fatalf("%d addresses, want %d", got, Masters)
	}
	ctx := context.Background()
	rdb := c.Client()
	// Keys of many slots land on every master.
	for i := range 100 {
		if err := rdb.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var masters atomic.Int32
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		masters.Add(1)
		size, err := n.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		if size == 0 {
			t.Errorf("master %s holds no key", n.Options().Addr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := masters.Load(); got != Masters {
		t.Errorf("%d masters, want %d", got, Masters)
	}
	// MasterOf names the node that holds a key.
	for _, key := range []string{"k0", "k1", "k2"} {
		node := redis.NewClient(&redis.Options{Addr: c.MasterOf(t, key)})
		v, err := node.Get(ctx, key).Result()
		_ = node.Close()
		if err != nil || v != key[1:] {
			t.Errorf("GET %s on %s = %q, %v", key, c.MasterOf(t, key), v, err)
		}
	}
}
