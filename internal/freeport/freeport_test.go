package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Ports handed out lie below the ephemeral range, bind, are never handed
// out twice, and with an offset leave port+offset free as well.
func TestPortsBelowTheEphemeralRangeNeverTwice(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	for range 50 {
		port, err := Port(10000)
		if err != nil {
			t.Fatal(err)
		}
		if port < lowest || port+10000 >= ephemeralLow() {
			t.Fatalf("port %d (+10000): want %d and up, below %d", port, lowest, ephemeralLow())
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		for _, p := range []int{port, port + 10000} {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				t.Fatalf("port %d does not bind: %v", p, err)
			}
			_ = l.Close()
		}
	}
	host, port, err := net.SplitHostPort(Addr(t))
	if n, _ := strconv.Atoi(port); err != nil || host != "127.0.0.1" || n < lowest || n >= ephemeralLow() {
		t.Fatalf("Addr: %s:%s (%v), want a loopback port from %d, below %d", host, port, err, lowest, ephemeralLow())
	}
}
