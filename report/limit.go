package report

import (
	"container/list"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/internal/telemetry"
)

// Limits of the authentication failures of one client address.
const (
	// DefaultAuthFailureLimit is how many failed authentications a client
	// address makes before it must wait (ServerConfig.AuthFailureLimit).
	DefaultAuthFailureLimit = 10
	// authBackoffBase is the first wait; each further failure doubles it,
	// up to authBackoffMax.
	authBackoffBase = time.Second
	authBackoffMax  = 15 * time.Minute
	// authForget is how long after its last failure an address is
	// forgotten (its count starts again).
	authForget = time.Hour
	// authLimiterCap is the most addresses remembered: past it the one
	// whose last failure is oldest is forgotten. About 150 bytes each.
	authLimiterCap = 50_000
)

// limiter slows down the guessing of credentials: it counts the failed
// authentications of each client address and, past the limit, makes the
// address wait before its next credential is checked, twice as long after
// each further failure. Its memory is bounded: at most cap addresses,
// each forgotten authForget after its last failure. IPv6 addresses count
// by /64 (what one client usually holds).
type limiter struct {
	mu      sync.Mutex
	limit   int // < 0: no limit
	cap     int
	now     func() time.Time
	entries map[netip.Addr]*list.Element
	order   *list.List // of *limitEntry, most recent failure first
}

type limitEntry struct {
	key      netip.Addr
	failures int
	last     time.Time // of the last failure
	until    time.Time // no credential is checked before
}

func newLimiter(limit int, now func() time.Time) *limiter {
	return &limiter{limit: limit, cap: authLimiterCap, now: now, entries: map[netip.Addr]*list.Element{}, order: list.New()}
}

// limitKey is the address a client is counted under.
func limitKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// expire forgets the addresses whose last failure is older than
// authForget. Called with mu held.
func (l *limiter) expire(now time.Time) {
	for e := l.order.Back(); e != nil; e = l.order.Back() {
		ent := e.Value.(*limitEntry)
		if now.Sub(ent.last) < authForget {
			return
		}
		l.order.Remove(e)
		delete(l.entries, ent.key)
	}
}

// wait returns how long client must wait before a credential of it is
// checked; 0: check it now.
func (l *limiter) wait(client netip.Addr) time.Duration {
	if l.limit < 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.expire(now)
	e, ok := l.entries[limitKey(client)]
	if !ok {
		return 0
	}
	return max(e.Value.(*limitEntry).until.Sub(now), 0)
}

// fail records a failed authentication of client and returns how long it
// must now wait.
func (l *limiter) fail(client netip.Addr) time.Duration {
	if l.limit < 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.expire(now)
	key := limitKey(client)
	e, ok := l.entries[key]
	if ok {
		l.order.MoveToFront(e)
	} else {
		for l.order.Len() >= l.cap {
			old := l.order.Back()
			l.order.Remove(old)
			delete(l.entries, old.Value.(*limitEntry).key)
		}
		e = l.order.PushFront(&limitEntry{key: key})
		l.entries[key] = e
	}
	ent := e.Value.(*limitEntry)
	ent.failures++
	ent.last = now
	if over := ent.failures - l.limit; over > 0 {
		d := authBackoffMax
		if over <= 20 {
			d = min(authBackoffBase<<(over-1), authBackoffMax)
		}
		ent.until = now.Add(d)
		return d
	}
	return 0
}

func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}

// authMetrics count failed and refused authentications.
type authMetrics struct {
	failures *prometheus.CounterVec
	limited  *prometheus.CounterVec
}

func newAuthMetrics(reg prometheus.Registerer, l *limiter) authMetrics {
	m := authMetrics{
		failures: telemetry.CounterVec(reg, "nudge_report_auth_failures_total",
			"Failed authentications of the report server, by how the credential came: bearer, basic, login (the sign-in form) or other (another Authorization scheme).", "method"),
		limited: telemetry.CounterVec(reg, "nudge_report_auth_limited_total",
			"Requests of the report server answered 429 unchecked: their client address failed to authenticate too often, by how the credential came.", "method"),
	}
	telemetry.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nudge_report_auth_limiter_addresses",
		Help: "Client addresses the report server remembers failed authentications of.",
	}, func() float64 { return float64(l.len()) }))
	return m
}

// metricMethod is the method label of a credential's way in.
func metricMethod(method string) string {
	switch method {
	case methodBearer, methodBasic, methodLogin, methodLink:
		return method
	}
	return "other"
}

// clientAddr returns the address of r's client: the TCP peer, or, when
// the peer is a trusted proxy, the rightmost address of X-Forwarded-For
// that is not a trusted proxy (the one the first trusted proxy saw).
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := remoteAddr(r)
	if len(trusted) == 0 || !isTrusted(peer, trusted) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a malformed hop: the last proxy that said it
		}
		addr = a.Unmap()
		if !isTrusted(addr, trusted) {
			return addr
		}
	}
	return addr
}

func remoteAddr(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host) // the zero Addr if not an IP: one bucket
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// tooMany answers a request of a client that must wait: 429 with
// Retry-After in whole seconds.
func tooMany(w http.ResponseWriter, wait time.Duration) int {
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return secs
}
