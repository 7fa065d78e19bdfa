package sandbox

import (
	"context"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/nudgehq/nudge/push"
)

// Delivery is a notification the sandbox accepted.
type Delivery struct {
	Platform string `json:"platform"`
	Token    string `json:"token"`
	// App is the sandbox app whose credentials sent it (a service account's access token, an
	// APNs provider token).
	App string `json:"app"`
	// MessageID is what the sandbox answered: the FCM message name or the apns-id.
	MessageID string `json:"message_id"`
	Title     string `json:"title,omitempty"`
	Body      string `json:"body,omitempty"`
	// CollapseKey is the FCM android.collapse_key or the APNs apns-collapse-id header.
	CollapseKey string `json:"collapse_key,omitempty"`
	// Tag is the FCM android.notification.tag.
	Tag      string `json:"tag,omitempty"`
	ThreadID string `json:"thread_id,omitempty"`
	// Badge is the FCM android.notification.notification_count (else apns aps.badge), or the
	// APNs aps.badge; nil when absent.
	Badge *int              `json:"badge,omitempty"`
	Sound string            `json:"sound,omitempty"`
	Data  map[string]string `json:"data,omitempty"`
	// Topic is the apns-topic header (APNs).
	Topic string `json:"topic,omitempty"`
	// PushType is the apns-push-type header (APNs, or the apns headers of an FCM message).
	PushType string `json:"push_type,omitempty"`
	// Priority is the FCM android.priority or the apns-priority header.
	Priority string `json:"priority,omitempty"`
	// TTL is the FCM android.ttl ("3600s") or the apns-expiration header (unix seconds).
	TTL string `json:"ttl,omitempty"`
	// TitleLocKey, BodyLocKey and their arguments: FCM android.notification title_loc_key
	// and body_loc_key (else the apns alert's), APNs aps.alert title-loc-key and loc-key.
	TitleLocKey  string   `json:"title_loc_key,omitempty"`
	TitleLocArgs []string `json:"title_loc_args,omitempty"`
	BodyLocKey   string   `json:"body_loc_key,omitempty"`
	BodyLocArgs  []string `json:"body_loc_args,omitempty"`
	// MutableContent is aps mutable-content (APNs, or the apns payload of an FCM message).
	MutableContent bool `json:"mutable_content,omitempty"`
	// PayloadBytes is the size of the FCM message object or of the APNs payload.
	PayloadBytes int       `json:"payload_bytes"`
	Time         time.Time `json:"time"`
}

// Message returns the push.Message that makes this delivery again: sent to
// d.Token through the same platform, it arrives with the same fields and
// payload size (an APNs expiration is kept as the time left until it, from
// now). Benchmarks use it to send a worker's pushes again with the raw
// client.
func (d Delivery) Message() push.Message {
	m := push.Message{
		Title: d.Title, Body: d.Body, CollapseKey: d.CollapseKey, ThreadID: d.ThreadID,
		Badge: -1, Data: maps.Clone(d.Data), Sound: d.Sound,
		TitleLocKey: d.TitleLocKey, TitleLocArgs: d.TitleLocArgs, BodyLocKey: d.BodyLocKey, BodyLocArgs: d.BodyLocArgs,
		MutableContent: d.MutableContent, Topic: d.Topic,
	}
	if d.Badge != nil {
		m.Badge = *d.Badge
	}
	if d.TTL != "" {
		if d.Platform == PlatformAPNs {
			if exp, err := strconv.ParseInt(d.TTL, 10, 64); err == nil {
				m.TTL = max(time.Second, time.Until(time.Unix(exp, 0)).Round(time.Second))
			}
		} else if ttl, err := time.ParseDuration(d.TTL); err == nil {
			m.TTL = ttl
		}
	}
	return m
}

// Stats counts what the sandbox saw since start or the last Reset.
type Stats struct {
	FCM  PlatformStats `json:"fcm"`
	APNs PlatformStats `json:"apns"`
	// OAuthTokensIssued counts access tokens the FCM token endpoint issued.
	OAuthTokensIssued int `json:"oauth_tokens_issued"`
	// OAuthTokensRefused counts JWT-bearer assertions the token endpoint refused.
	OAuthTokensRefused int `json:"oauth_tokens_refused"`
	// Deliveries is the number of deliveries held now.
	Deliveries int `json:"deliveries"`
}

// PlatformStats counts the send requests of one platform.
type PlatformStats struct {
	Requests  int `json:"requests"`
	Delivered int `json:"delivered"`
	// Errors counts error answers by FCM error code or APNs reason, e.g. "UNREGISTERED",
	// "BadDeviceToken", "UNAUTHENTICATED".
	Errors map[string]int `json:"errors"`
	// MaxInFlight is the most send requests handled at the same time.
	MaxInFlight int `json:"max_in_flight"`
	// Connections counts the TCP connections the platform's listener accepted. The FCM
	// listener also serves the OAuth2 token and control endpoints. A client that keeps its
	// connections open makes about as many as it sends at once; one that does not, about one a
	// request.
	Connections int `json:"connections"`
}

// recorder is guarded by Server.mu.
type recorder struct {
	max        int
	deliveries []Delivery
	stats      Stats
	// changed is closed, and replaced, whenever a delivery is recorded or the record reset.
	changed chan struct{}
}

func newRecorder(maxDeliveries int) recorder {
	return recorder{
		max:     maxDeliveries,
		stats:   Stats{FCM: PlatformStats{Errors: map[string]int{}}, APNs: PlatformStats{Errors: map[string]int{}}},
		changed: make(chan struct{}),
	}
}

func (r *recorder) platform(p string) *PlatformStats {
	if p == PlatformAPNs {
		return &r.stats.APNs
	}
	return &r.stats.FCM
}

func (r *recorder) add(d Delivery) {
	if len(r.deliveries) >= r.max {
		// A new array: a recorded delivery is never changed in place, so
		// that WaitFor can hand out the slice without copying it.
		r.deliveries = slices.Clone(r.deliveries[len(r.deliveries)-r.max+1:])
	}
	r.deliveries = append(r.deliveries, d)
	r.platform(d.Platform).Delivered++
	r.notify()
}

func (r *recorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// countRequest counts a send request; the caller calls the returned func when done with it.
func (s *Server) countRequest(platform string) (done func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight[platform]++
	st := s.rec.platform(platform)
	st.Requests++
	st.MaxInFlight = max(st.MaxInFlight, s.inFlight[platform])
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.inFlight[platform]--
	}
}

// countConn is an http.Server's ConnState hook: it counts the platform's new connections.
func (s *Server) countConn(platform string) func(net.Conn, http.ConnState) {
	return func(_ net.Conn, state http.ConnState) {
		if state != http.StateNew {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.rec.platform(platform).Connections++
	}
}

func (s *Server) countError(platform, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rec.platform(platform).Errors[code]++
}

func (s *Server) record(d Delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rec.add(d)
}

// Deliveries returns a copy of the recorded deliveries, oldest first.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rec.deliveries)
}

// DeliveriesTo returns the recorded deliveries to one token, oldest first.
func (s *Server) DeliveriesTo(token string) []Delivery {
	return filterDeliveries(s.Deliveries(), token, "")
}

func filterDeliveries(ds []Delivery, token, platform string) []Delivery {
	out := make([]Delivery, 0, len(ds))
	for _, d := range ds {
		if (token == "" || d.Token == token) && (platform == "" || d.Platform == platform) {
			out = append(out, d)
		}
	}
	return out
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.rec.stats
	st.FCM.Errors = maps.Clone(st.FCM.Errors)
	st.APNs.Errors = maps.Clone(st.APNs.Errors)
	st.Deliveries = len(s.rec.deliveries)
	return st
}

// Reset forgets the recorded deliveries and zeroes the counters. Faults and credentials
// stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.rec.changed
	s.rec = newRecorder(s.rec.max)
	close(changed)
}

// WaitFor blocks until done returns true for the recorded deliveries, or ctx ends. done is
// called with a snapshot it must not modify, at once and after every change, never
// concurrently. The snapshot is not a copy (a copy on every delivery made waiting for n
// deliveries cost O(n²), enough to slow a benchmark down).
func (s *Server) WaitFor(ctx context.Context, done func([]Delivery) bool) error {
	for {
		s.mu.Lock()
		ds := s.rec.deliveries[:len(s.rec.deliveries):len(s.rec.deliveries)]
		changed := s.rec.changed
		s.mu.Unlock()
		if done(ds) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
