// Package clustertest starts a real Redis Cluster for tests: three masters,
// no replicas, on free loopback ports, as child processes of the test.
//
// It needs redis-server and redis-cli (Redis 7) on the PATH; without
// redis-server the test is skipped. Each call to Start makes a cluster of
// its own, so tests that use one may run in parallel.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/redistest"
)

// Masters is the number of masters of a cluster.
const Masters = 3

// busOffset is what Redis adds to a node's port for its cluster bus.
const busOffset = 10000

// startTimeout bounds how long a cluster may take to form.
const startTimeout = 60 * time.Second

// Cluster is a running Redis Cluster.
type Cluster struct {
	addrs  []string
	client *redis.ClusterClient
}

// Addrs returns the host:port of every master, in the order the cluster
// was created (the first holds the lowest slots).
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// Client returns a client of the cluster, closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient { return c.client }

// Start starts a cluster of Masters masters and waits until every node
// reports cluster_state:ok with all 16384 slots served. The servers are
// killed and their directory removed when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	server := redistest.Server(t, "a Redis Cluster")
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("clustertest: redis-server is installed but redis-cli is not")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()

	c := &Cluster{}
	for range Masters {
		n, err := startNode(ctx, t, server, dir)
		if err != nil {
			t.Fatalf("clustertest: %v", err)
		}
		c.addrs = append(c.addrs, n)
	}

	create := exec.CommandContext(ctx, cli, append(append([]string{"--cluster", "create"}, c.addrs...),
		"--cluster-replicas", "0", "--cluster-yes")...)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("clustertest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := waitHealthy(ctx, c.addrs); err != nil {
		t.Fatalf("clustertest: the cluster did not form: %v", err)
	}

	c.client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.addrs})
	t.Cleanup(func() { _ = c.client.Close() })
	err = c.client.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() })
	if err != nil {
		t.Fatalf("clustertest: ping: %v", err)
	}
	return c
}

// startNode starts one cluster-enabled redis-server on a free port and
// waits until it answers. A port taken between choosing and binding it is
// retried with another one.
func startNode(ctx context.Context, t testing.TB, server, dir string) (string, error) {
	var errs []error
	for range 5 {
		port, err := freeport.Port(busOffset)
		if err != nil {
			return "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		out := &harness.Buffer{}
		p := strconv.Itoa(port)
		// The server outlives ctx, which bounds the start only: the cleanup
		// kills it.
		cmd := exec.CommandContext(context.WithoutCancel(ctx), server,
			"--port", p, "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+p+".conf"),
			"--cluster-node-timeout", "5000",
			"--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no")
		cmd.Stdout, cmd.Stderr = out, out
		setProcAttr(cmd)
		if err := cmd.Start(); err != nil {
			return "", fmt.Errorf("start redis-server: %w", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("clustertest: redis-server %s output:\n%s", addr, out.String())
			}
		})
		err = waitPing(ctx, addr, exited)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w\n%s", addr, err, out.String()))
		if ctx.Err() != nil {
			break
		}
	}
	return "", fmt.Errorf("no redis-server started: %w", errors.Join(errs...))
}

// waitPing polls addr until it answers PING, the process exits or ctx ends.
func waitPing(ctx context.Context, addr string, exited <-chan struct{}) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("redis-server exited")
		case <-ctx.Done():
			return fmt.Errorf("no answer: %w", err)
		case <-tick.C:
		}
	}
}

// waitHealthy polls every node until each one sees a healthy cluster of
// all the nodes with every slot served.
func waitHealthy(ctx context.Context, addrs []string) error {
	clients := make([]*redis.Client, len(addrs))
	for i, a := range addrs {
		clients[i] = redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
		defer clients[i].Close()
	}
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": "16384",
		"cluster_slots_ok":       "16384",
		"cluster_known_nodes":    strconv.Itoa(len(addrs)),
		"cluster_size":           strconv.Itoa(len(addrs)),
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := healthy(ctx, clients, addrs, want)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}

func healthy(ctx context.Context, clients []*redis.Client, addrs []string, want map[string]string) error {
	for i, c := range clients {
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: cluster info: %w", addrs[i], err)
		}
		got := map[string]string{}
		for line := range strings.SplitSeq(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			got[k] = v
		}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s: %s:%s, want %s", addrs[i], k, got[k], v)
			}
		}
		// Every node must also see every slot served by an online master.
		shards, err := c.ClusterShards(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: cluster shards: %w", addrs[i], err)
		}
		covered, masters := int64(0), 0
		for _, sh := range shards {
			if m, ok := master(sh); ok && m.Health == "online" {
				masters++
				for _, r := range sh.Slots {
					covered += r.End - r.Start + 1
				}
			}
		}
		if covered != 16384 || masters != len(addrs) {
			return fmt.Errorf("%s: %d online masters serve %d slots", addrs[i], masters, covered)
		}
	}
	return nil
}

func master(sh redis.ClusterShard) (redis.Node, bool) {
	for _, n := range sh.Nodes {
		if n.Role == "master" {
			return n, true
		}
	}
	return redis.Node{}, false
}

// MasterOf returns the address of the master that holds key's slot.
func (c *Cluster) MasterOf(t testing.TB, key string) string {
	t.Helper()
	ctx := context.Background()
	slot, err := c.client.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatalf("clustertest: cluster keyslot %s: %v", key, err)
	}
	shards, err := c.client.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatalf("clustertest: cluster shards: %v", err)
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if r.Start <= slot && slot <= r.End {
				if m, ok := master(sh); ok {
					return net.JoinHostPort(m.IP, strconv.FormatInt(m.Port, 10))
				}
			}
		}
	}
	t.Fatalf("clustertest: no master serves slot %d of %s", slot, key)
	return ""
}
