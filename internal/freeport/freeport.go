// Package freeport hands out loopback ports for the processes tests start
// (a binary's metrics server, a private redis-server, a cluster node).
//
// Listening on 127.0.0.1:0 and closing the listener gives a port from the
// kernel's ephemeral range, the range the kernel also takes the local port
// of every outgoing connection from: between the pick and the process's
// bind, a Redis client of a test running alongside can take it, and the
// process fails with "address already in use". freeport picks below that
// range instead, at random, checks that the port binds, and marks it taken
// for the other test processes of the run (a file per port in the temp
// directory), so two packages' tests never get the same one. A mark lasts
// an hour: a chaos run restarts its redis-server on the same port, and no
// other test may take the port in between.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// lowest is the lowest port handed out: above the ports services
// conventionally listen on.
const lowest = 10000

// held is how long a port handed out stays reserved for its test.
const held = time.Hour

// Port returns a loopback port free now, outside the ephemeral range, and
// reserved for the caller; with offsets, port+offset is free for each
// offset too (a Redis Cluster node's bus port is its port + 10000).
func Port(offsets ...int) (int, error) {
	low := ephemeralLow()
	top := low
	for _, o := range offsets {
		top = min(top, low-o)
	}
	if top-lowest < 100 {
		return 0, fmt.Errorf("freeport: no room below the ephemeral range (from %d) for offsets %v", low, offsets)
	}
	dir := filepath.Join(os.TempDir(), "nudge-freeport")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	for range 200 {
		port := lowest + rand.IntN(top-lowest)
		if !reserve(dir, port) {
			continue
		}
		free := bindable(port)
		for _, o := range offsets {
			free = free && bindable(port+o)
		}
		if free {
			return port, nil
		}
	}
	return 0, errors.New("freeport: found no free port in 200 tries")
}

// Addr returns "127.0.0.1:port" for a port of Port, failing the test if
// there is none. (t is a testing.TB; the package does not import testing,
// so that the chaos and bench commands, which call Port, do not link it.)
func Addr(t interface {
	Helper()
	Fatal(args ...any)
}) string {
	t.Helper()
	port, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// reserve marks port taken by creating its file; a file older than held is
// taken over.
func reserve(dir string, port int) bool {
	name := filepath.Join(dir, strconv.Itoa(port))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err == nil {
		_ = f.Close()
		return true
	}
	st, serr := os.Stat(name)
	if serr != nil || time.Since(st.ModTime()) < held {
		return false
	}
	now := time.Now()
	return os.Chtimes(name, now, now) == nil
}

func bindable(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range
// (32768 where it cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil || n <= lowest {
		return 32768
	}
	return n
}
