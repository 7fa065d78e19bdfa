package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"
)

// APNsConfig configures an APNs sender, which authenticates with a provider token signed
// by a .p8 key (token-based auth). The zero value of every optional field means its default.
type APNsConfig struct {
	// KeyP8 is the PKCS#8 PEM of the ES256 signing key downloaded from Apple. Exactly one of
	// KeyP8 and KeyFile is required.
	KeyP8 []byte
	// KeyFile is the path of the .p8 key file.
	KeyFile string
	// KeyID is the 10-character id of the key. Required.
	KeyID string
	// TeamID is the Apple developer team id, the issuer of provider tokens. Required.
	TeamID string
	// Topic is the app's bundle id, sent as apns-topic. Required.
	Topic string
	// Host is the APNs base URL. Default apns2.HostProduction; apns2.HostDevelopment for
	// development builds of the app; the push sandbox gives its own.
	Host string
	// RootCAs verifies the server certificate. Default: the system roots. The sandbox gives
	// the pool of its generated CA.
	RootCAs *x509.CertPool
	// CAFile is a PEM file of the CAs to trust instead of the system roots (the sandbox's
	// apns-ca.pem). At most one of RootCAs and CAFile.
	CAFile string
	// Concurrency bounds the requests one Send call has in flight. Default 16.
	Concurrency int
	// Timeout bounds one request, connection set-up included. Default 30s.
	Timeout time.Duration
	// Logger receives a debug line per token not delivered and a warning when the provider
	// token is rejected. Default: discard.
	Logger *slog.Logger
}

// APNs sends notifications to Apple devices over HTTP/2 with sideshow/apns2.
//
// One apns2.Client, and so one pool of HTTP/2 connections, serves every call. Neither the
// client nor its provider token is modified after NewAPNs (the token's own refresh is
// mutex-guarded in apns2), so an APNs is safe for concurrent use.
type APNs struct {
	client      *apns2.Client
	transport   *http.Transport
	topic       string
	concurrency int
	log         *slog.Logger
}

var _ Sender = (*APNs)(nil)

// NewAPNs returns an APNs sender. It checks the key and signs a first provider token but
// makes no network call.
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	var (
		key *ecdsa.PrivateKey
		err error
	)
	switch {
	case len(cfg.KeyP8) > 0 && cfg.KeyFile != "":
		return nil, fmt.Errorf("%w: apns: both KeyP8 and KeyFile set", ErrInvalidConfig)
	case len(cfg.KeyP8) > 0:
		key, err = token.AuthKeyFromBytes(cfg.KeyP8)
	case cfg.KeyFile != "":
		key, err = token.AuthKeyFromFile(cfg.KeyFile)
	default:
		return nil, fmt.Errorf("%w: apns: no signing key", ErrInvalidConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: apns: signing key: %w", ErrInvalidConfig, err)
	}
	if cfg.KeyID == "" || cfg.TeamID == "" || cfg.Topic == "" {
		return nil, fmt.Errorf("%w: apns: KeyID, TeamID and Topic are required", ErrInvalidConfig)
	}
	host := cfg.Host
	if host == "" {
		host = apns2.HostProduction
	}
	host = strings.TrimRight(host, "/")
	if u, err := url.Parse(host); err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" {
		return nil, fmt.Errorf("%w: apns: host %q is not an https://host[:port] URL", ErrInvalidConfig, cfg.Host)
	}
	if cfg.Concurrency < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: apns: negative setting", ErrInvalidConfig)
	}
	roots := cfg.RootCAs
	if cfg.CAFile != "" {
		if roots != nil {
			return nil, fmt.Errorf("%w: apns: both RootCAs and CAFile set", ErrInvalidConfig)
		}
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: apns: CA file: %w", ErrInvalidConfig, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: apns: CA file %s: no PEM certificate in it", ErrInvalidConfig, cfg.CAFile)
		}
	}
	concurrency := cfg.Concurrency
	if concurrency == 0 {
		concurrency = 16
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}

	tok := &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
	if _, err := tok.Generate(); err != nil {
		return nil, fmt.Errorf("%w: apns: sign provider token: %w", ErrInvalidConfig, err)
	}

	// APNs speaks HTTP/2 only. net/http's transport pools connections and multiplexes
	// requests over them, pings idle ones, and dials with the request's context.
	protocols := new(http.Protocols)
	protocols.SetHTTP2(true)
	transport := &http.Transport{
		Protocols:           protocols,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext:         (&net.Dialer{Timeout: 20 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     5 * time.Minute,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	client := apns2.NewTokenClient(tok)
	client.Host = host
	client.HTTPClient = &http.Client{Transport: &headerCapture{next: transport}, Timeout: timeout}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &APNs{
		client:      client,
		transport:   transport,
		topic:       cfg.Topic,
		concurrency: concurrency,
		log:         logger,
	}, nil
}

// Platform returns PlatformAPNs.
func (a *APNs) Platform() string { return PlatformAPNs }

// Close closes the idle HTTP/2 connections. The sender stays usable; a later Send dials again.
func (a *APNs) Close() error {
	a.transport.CloseIdleConnections()
	return nil
}

// Send sends msg to every token, with at most Concurrency requests in flight. See Sender
// for the contract.
func (a *APNs) Send(ctx context.Context, msg Message, tokens []string) ([]Result, error) {
	results, err := start(ctx, msg, tokens)
	if err != nil || len(tokens) == 0 {
		return results, err
	}
	_, body, err := fitPayload(msg, MaxPayloadBytes, apnsPayload)
	if err != nil {
		return encodeFailed(PlatformAPNs, results, tokens, err)
	}
	var expiration time.Time
	if msg.TTL > 0 {
		expiration = time.Now().Add(msg.TTL)
	}
	topic := a.topic
	if msg.Topic != "" {
		topic = msg.Topic
	}

	// Each worker writes only the results of the indexes it claims.
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(a.concurrency, len(tokens)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tokens) {
					return
				}
				n := &apns2.Notification{
					DeviceToken: tokens[i],
					Topic:       topic,
					CollapseID:  msg.CollapseKey,
					Priority:    apns2.PriorityHigh,
					PushType:    apns2.PushTypeAlert,
					Expiration:  expiration,
					Payload:     body,
				}
				results[i] = a.push(ctx, n)
			}
		})
	}
	wg.Wait()
	return finish(ctx, a.log, PlatformAPNs, results)
}

func (a *APNs) push(ctx context.Context, n *apns2.Notification) Result {
	res := Result{Token: n.DeviceToken}
	if !validAPNsToken(n.DeviceToken) {
		// Not sent: the token would not even form a valid request path.
		res.Outcome, res.Reason = TokenInvalid, ReasonBadDeviceToken
		if n.DeviceToken == "" {
			res.Reason = ReasonEmptyToken
		}
		return res
	}
	if err := ctx.Err(); err != nil {
		res.Outcome, res.Reason, res.Err = Retry, ReasonCanceled, err
		return res
	}
	meta := &responseMeta{}
	r, err := a.client.PushWithContext(context.WithValue(ctx, responseMetaKey{}, meta), n)
	if err != nil {
		res.Outcome, res.Reason = transportOutcome(ctx, err)
		res.Err = err
		return res
	}
	if r.Sent() {
		res.Outcome, res.Reason, res.MessageID = Delivered, ReasonDelivered, r.ApnsID
		return res
	}
	res.Outcome, res.Reason = classifyAPNs(r.StatusCode, r.Reason)
	res.Err = &APNsError{Status: r.StatusCode, Reason: r.Reason, Timestamp: r.Timestamp.Time}
	if res.Outcome == Retry {
		res.RetryAfter = parseRetryAfter(meta.retryAfter, time.Now())
	}
	return res
}

// APNsError is the Err of a Result for a request APNs answered with an error.
type APNsError struct {
	Status int    // HTTP status
	Reason string // APNs reason, e.g. "BadDeviceToken"
	// Timestamp is, for 410 responses, when APNs learned the token was no longer valid. A
	// registry should not remove a token registered again after it.
	Timestamp time.Time
}

func (e *APNsError) Error() string {
	return fmt.Sprintf("apns: %d %s", e.Status, e.Reason)
}

// apnsReasons maps the reasons of APNs error responses to outcomes and labels.
var apnsReasons = map[string]struct {
	outcome Outcome
	label   string
}{
	apns2.ReasonUnregistered:                {TokenInvalid, ReasonUnregistered},
	apns2.ReasonExpiredToken:                {TokenInvalid, ReasonUnregistered},
	apns2.ReasonBadDeviceToken:              {TokenInvalid, ReasonBadDeviceToken},
	apns2.ReasonDeviceTokenNotForTopic:      {TokenInvalid, ReasonTokenNotForTopic},
	apns2.ReasonPayloadTooLarge:             {Failed, ReasonPayloadTooLarge},
	apns2.ReasonTopicDisallowed:             {Failed, ReasonTopicDisallowed},
	apns2.ReasonTooManyRequests:             {Retry, ReasonRateLimited},
	apns2.ReasonTooManyProviderTokenUpdates: {Retry, ReasonRateLimited},
	apns2.ReasonInternalServerError:         {Retry, ReasonInternal},
	apns2.ReasonServiceUnavailable:          {Retry, ReasonUnavailable},
	apns2.ReasonShutdown:                    {Retry, ReasonUnavailable},
	apns2.ReasonIdleTimeout:                 {Retry, ReasonNetwork},
	apns2.ReasonInvalidProviderToken:        {Failed, ReasonProviderAuth},
	apns2.ReasonExpiredProviderToken:        {Failed, ReasonProviderAuth},
	apns2.ReasonMissingProviderToken:        {Failed, ReasonProviderAuth},
	apns2.ReasonBadCertificate:              {Failed, ReasonProviderAuth},
	apns2.ReasonBadCertificateEnvironment:   {Failed, ReasonProviderAuth},
	apns2.ReasonForbidden:                   {Failed, ReasonProviderAuth},
}

// classifyAPNs maps an APNs error response to an Outcome and a reason label: by reason when
// APNs sent a known one, else by status.
func classifyAPNs(status int, reason string) (Outcome, string) {
	if c, ok := apnsReasons[reason]; ok {
		return c.outcome, c.label
	}
	switch {
	case status == http.StatusGone:
		return TokenInvalid, ReasonUnregistered
	case status == http.StatusTooManyRequests:
		return Retry, ReasonRateLimited
	case status == http.StatusServiceUnavailable:
		return Retry, ReasonUnavailable
	case status >= 500:
		return Retry, ReasonInternal
	case status == http.StatusForbidden:
		return Failed, ReasonProviderAuth
	case status == http.StatusRequestEntityTooLarge:
		return Failed, ReasonPayloadTooLarge
	case status >= 400:
		return Failed, ReasonBadRequest
	default:
		return Failed, ReasonUnknown
	}
}

// apnsPayload encodes msg as an APNs payload: alert title and body (with their localization
// keys and arguments), badge, thread id, sound, mutable-content, and the data as custom keys
// beside "aps".
func apnsPayload(msg Message) ([]byte, error) {
	p := payload.NewPayload().AlertTitle(msg.Title).AlertBody(msg.Body)
	if msg.TitleLocKey != "" {
		p.AlertTitleLocKey(msg.TitleLocKey).AlertTitleLocArgs(orEmpty(msg.TitleLocArgs))
	}
	if msg.BodyLocKey != "" {
		p.AlertLocKey(msg.BodyLocKey).AlertLocArgs(orEmpty(msg.BodyLocArgs))
	}
	if msg.MutableContent {
		p.MutableContent()
	}
	if msg.Badge >= 0 {
		p.Badge(msg.Badge)
	}
	if msg.ThreadID != "" {
		p.ThreadID(msg.ThreadID)
	}
	if msg.Sound != "" {
		p.Sound(msg.Sound)
	}
	for k, v := range msg.data() {
		p.Custom(k, v)
	}
	return json.Marshal(p)
}

// orEmpty makes a nil argument list an empty one: a loc-key's arguments
// are a JSON array, never null.
func orEmpty(args []string) []string {
	if args == nil {
		return []string{}
	}
	return args
}

// validAPNsToken reports whether t looks like an APNs device token: hex digits. Apple does
// not promise a length, so none is checked beyond a sanity bound.
func validAPNsToken(t string) bool {
	if t == "" || len(t) > 512 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// responseMeta carries what apns2.Response leaves out (Retry-After) from the transport back
// to push. One is made per request and reaches headerCapture through the request context;
// the transport writes it before PushWithContext returns, on the same goroutine.
type responseMeta struct {
	retryAfter string
}

type responseMetaKey struct{}

// headerCapture records headers of APNs responses into the request's responseMeta.
type headerCapture struct {
	next http.RoundTripper
}

func (h *headerCapture) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(req)
	if err == nil {
		if m, ok := req.Context().Value(responseMetaKey{}).(*responseMeta); ok {
			m.retryAfter = resp.Header.Get("Retry-After")
		}
	}
	return resp, err
}

// CloseIdleConnections lets apns2.Client.CloseIdleConnections reach the transport.
func (h *headerCapture) CloseIdleConnections() {
	if c, ok := h.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
