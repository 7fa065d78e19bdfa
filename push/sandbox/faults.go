package sandbox

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"
)

// FaultKind is a failure the sandbox answers instead of delivering.
type FaultKind string

// Fault kinds, with the answer of each provider.
const (
	// FaultUnregistered: FCM 404 NOT_FOUND / UNREGISTERED; APNs 410 Unregistered.
	FaultUnregistered FaultKind = "unregistered"
	// FaultBadToken: FCM 400 INVALID_ARGUMENT ("The registration token is not a valid FCM
	// registration token"); APNs 400 BadDeviceToken.
	FaultBadToken FaultKind = "bad_token"
	// FaultWrongSender: FCM 403 PERMISSION_DENIED / SENDER_ID_MISMATCH; APNs 400
	// DeviceTokenNotForTopic.
	FaultWrongSender FaultKind = "wrong_sender"
	// FaultRateLimited: FCM 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED; APNs 429
	// TooManyRequests; with Retry-After when RetryAfterSeconds is set.
	FaultRateLimited FaultKind = "rate_limited"
	// FaultServerError: Status 503 (default) or 500. FCM UNAVAILABLE / INTERNAL; APNs
	// ServiceUnavailable / InternalServerError; with Retry-After when RetryAfterSeconds is set.
	FaultServerError FaultKind = "server_error"
	// FaultLostAnswer: the sandbox delivers the notification (it is recorded), then holds
	// the answer for StallMS (0: none) and drops it: the HTTP/2 stream is reset (the
	// connection closed on HTTP/1.1) without a response, as when a provider's answer is lost
	// or comes after the client gave up. The client cannot tell whether it was delivered.
	FaultLostAnswer FaultKind = "lost_answer"
)

// Fault makes the sandbox fail the requests for one device token.
type Fault struct {
	// Token is the device token the fault applies to. Required.
	Token string `json:"token"`
	// Platform limits the fault to PlatformFCM or PlatformAPNs; "" means both.
	Platform string    `json:"platform,omitempty"`
	Kind     FaultKind `json:"kind"`
	// Times is how many of the next requests for the token fail; 0 means all of them.
	Times int `json:"times,omitempty"`
	// RetryAfterSeconds, when positive, is sent as Retry-After (rate_limited, server_error).
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
	// Status is the HTTP status of a server_error: 500 or 503. Default 503.
	Status int `json:"status,omitempty"`
	// StallMS is how long a lost_answer holds the answer before dropping it (the client
	// may give up first).
	StallMS int `json:"stall_ms,omitempty"`
}

func (f Fault) validate() error {
	if f.Token == "" {
		return errors.New("sandbox: fault without token")
	}
	switch f.Platform {
	case "", PlatformFCM, PlatformAPNs:
	default:
		return fmt.Errorf("sandbox: fault platform %q", f.Platform)
	}
	switch f.Kind {
	case FaultUnregistered, FaultBadToken, FaultWrongSender, FaultRateLimited, FaultServerError, FaultLostAnswer:
	default:
		return fmt.Errorf("sandbox: fault kind %q", f.Kind)
	}
	if f.Times < 0 || f.RetryAfterSeconds < 0 || f.StallMS < 0 {
		return errors.New("sandbox: fault with negative times, retry_after_seconds or stall_ms")
	}
	if f.StallMS > 0 && f.Kind != FaultLostAnswer {
		return fmt.Errorf("sandbox: fault stall_ms: only for lost_answer")
	}
	if f.Status != 0 && (f.Kind != FaultServerError || f.Status != 500 && f.Status != 503) {
		return fmt.Errorf("sandbox: fault status %d: only 500 or 503, for server_error", f.Status)
	}
	return nil
}

// Chaos is a seeded random failure mix, applied to requests for tokens without a Fault.
// The probabilities are per request and their sum is at most 1.
type Chaos struct {
	Seed uint64 `json:"seed"`
	// ServerError is the probability of a 503.
	ServerError float64 `json:"server_error,omitempty"`
	// RateLimited is the probability of a 429.
	RateLimited float64 `json:"rate_limited,omitempty"`
	// Unregistered is the probability that a token becomes unregistered; it then stays so,
	// like a real uninstalled app.
	Unregistered float64 `json:"unregistered,omitempty"`
	// RetryAfterSeconds, when positive, is sent as Retry-After with 503 and 429.
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
}

// RegisterFlags registers the mix on fs as the -chaos-* flags of
// cmd/pushsandbox.
func (c *Chaos) RegisterFlags(fs *flag.FlagSet) {
	fs.Uint64Var(&c.Seed, "chaos-seed", 1, "seed of the random failure mix")
	fs.Float64Var(&c.ServerError, "chaos-5xx", 0, "probability of a 503 per request")
	fs.Float64Var(&c.RateLimited, "chaos-429", 0, "probability of a 429 per request")
	fs.Float64Var(&c.Unregistered, "chaos-unregistered", 0, "probability that a token becomes unregistered (for good)")
	fs.IntVar(&c.RetryAfterSeconds, "chaos-retry-after", 0, "Retry-After seconds sent with chaos 503 and 429 (0: none)")
}

func (c Chaos) validate() error {
	for _, p := range []float64{c.ServerError, c.RateLimited, c.Unregistered} {
		if !(p >= 0 && p <= 1) {
			return fmt.Errorf("sandbox: chaos probability %v outside [0, 1]", p)
		}
	}
	if c.ServerError+c.RateLimited+c.Unregistered > 1 {
		return errors.New("sandbox: chaos probabilities add up to more than 1")
	}
	if c.RetryAfterSeconds < 0 {
		return errors.New("sandbox: chaos with negative retry_after_seconds")
	}
	return nil
}

func (c Chaos) enabled() bool { return c.ServerError+c.RateLimited+c.Unregistered > 0 }

// FaultSet is the fault configuration: the per-token faults still active, the chaos mix
// and the latency. It is also the body of POST /sandbox/faults, where every part is optional.
type FaultSet struct {
	Faults []Fault `json:"faults"`
	Chaos  *Chaos  `json:"chaos,omitempty"`
	// LatencyMS delays every send request by this many milliseconds.
	LatencyMS *int64 `json:"latency_ms,omitempty"`
}

// activeFault is a Fault with its remaining count (-1: always).
type activeFault struct {
	Fault
	left int
}

// faultState is guarded by Server.mu.
type faultState struct {
	faults       []*activeFault
	chaos        Chaos
	rng          *rand.Rand
	unregistered map[string]bool // tokens chaos made unregistered, per "platform/token"
	latency      time.Duration
}

func newFaultState(c Chaos, latency time.Duration) faultState {
	return faultState{
		chaos:        c,
		rng:          rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15)),
		unregistered: make(map[string]bool),
		latency:      latency,
	}
}

// decision is the answer chosen for a request; a nil *decision means deliver.
type decision struct {
	kind       FaultKind
	status     int           // server_error: 500 or 503
	retryAfter int           // seconds; 0 means no header
	stall      time.Duration // lost_answer: how long the answer is held
}

// loseAnswer holds the answer to a request whose notification was delivered for d.stall,
// or until the client goes away, then drops it without a response.
func loseAnswer(r *http.Request, d *decision) {
	if d.stall > 0 {
		t := time.NewTimer(d.stall)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	panic(http.ErrAbortHandler)
}

// decide picks the fault for a request to token, consuming one use of a counted fault.
func (fs *faultState) decide(platform, token string) *decision {
	for i, f := range fs.faults {
		if f.Token != token || f.Platform != "" && f.Platform != platform {
			continue
		}
		if f.left > 0 {
			f.left--
			if f.left == 0 {
				fs.faults = slices.Delete(fs.faults, i, i+1)
			}
		}
		d := &decision{kind: f.Kind, status: f.Status, retryAfter: f.RetryAfterSeconds, stall: time.Duration(f.StallMS) * time.Millisecond}
		if d.kind == FaultServerError && d.status == 0 {
			d.status = 503
		}
		return d
	}
	if !fs.chaos.enabled() {
		return nil
	}
	key := platform + "/" + token
	if fs.unregistered[key] {
		return &decision{kind: FaultUnregistered}
	}
	c := fs.chaos
	switch p := fs.rng.Float64(); {
	case p < c.ServerError:
		return &decision{kind: FaultServerError, status: 503, retryAfter: c.RetryAfterSeconds}
	case p < c.ServerError+c.RateLimited:
		return &decision{kind: FaultRateLimited, retryAfter: c.RetryAfterSeconds}
	case p < c.ServerError+c.RateLimited+c.Unregistered:
		fs.unregistered[key] = true
		return &decision{kind: FaultUnregistered}
	}
	return nil
}

func (fs *faultState) snapshot() FaultSet {
	set := FaultSet{Faults: make([]Fault, 0, len(fs.faults))}
	for _, f := range fs.faults {
		g := f.Fault
		if f.left > 0 {
			g.Times = f.left
		}
		set.Faults = append(set.Faults, g)
	}
	c := fs.chaos
	ms := fs.latency.Milliseconds()
	set.Chaos, set.LatencyMS = &c, &ms
	return set
}

// InjectFault adds a fault for one token. Faults for a token apply in the order they were
// added; a counted one is removed once used up.
func (s *Server) InjectFault(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	left := f.Times
	if left == 0 {
		left = -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.faults = append(s.faults.faults, &activeFault{Fault: f, left: left})
	return nil
}

// SetChaos replaces the random failure mix and restarts its generator from c.Seed. The zero
// Chaos turns it off.
func (s *Server) SetChaos(c Chaos) error {
	if err := c.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	latency := s.faults.latency
	faults := s.faults.faults
	s.faults = newFaultState(c, latency)
	s.faults.faults = faults
	return nil
}

// SetLatency delays every later send request by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.latency = max(d, 0)
}

// ClearFaults removes every fault, the chaos mix, the tokens chaos unregistered and the
// latency.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = newFaultState(Chaos{}, 0)
}

// Faults returns the current fault configuration.
func (s *Server) Faults() FaultSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults.snapshot()
}

// applyFaultSet applies a POST /sandbox/faults body: it adds the faults and replaces the
// chaos mix and the latency when present. It validates everything before changing anything.
func (s *Server) applyFaultSet(set FaultSet) error {
	for _, f := range set.Faults {
		if err := f.validate(); err != nil {
			return err
		}
	}
	if set.Chaos != nil {
		if err := set.Chaos.validate(); err != nil {
			return err
		}
	}
	if set.LatencyMS != nil && *set.LatencyMS < 0 {
		return errors.New("sandbox: negative latency_ms")
	}
	if set.Chaos != nil {
		if err := s.SetChaos(*set.Chaos); err != nil {
			return err
		}
	}
	if set.LatencyMS != nil {
		s.SetLatency(time.Duration(*set.LatencyMS) * time.Millisecond)
	}
	for _, f := range set.Faults {
		if err := s.InjectFault(f); err != nil {
			return err
		}
	}
	return nil
}
