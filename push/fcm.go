package push

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"
)

// fcmScope is the OAuth2 scope FCM HTTP v1 requires.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// fcmMaxBatch is the most messages firebase-admin-go's SendEach accepts in one call.
const fcmMaxBatch = 500

// upstreamStatusHeader keeps the real status of a response whose status sdkRetryGuard changed.
const upstreamStatusHeader = "X-Nudge-Upstream-Status"

// FCMConfig configures an FCM sender. The zero value of every optional field means its
// default.
type FCMConfig struct {
	// ProjectID is the Firebase project to send through. Default: the project_id of the
	// service account.
	ProjectID string
	// CredentialsJSON is a Google service-account key in JSON. Exactly one of
	// CredentialsJSON and CredentialsFile is required; Nudge never falls back to application
	// default credentials (which would probe the GCE metadata server).
	CredentialsJSON []byte
	// CredentialsFile is the path of a service-account key file.
	CredentialsFile string
	// Endpoint is the base URL of the FCM HTTP v1 API, "/v1" included. Default "" means
	// Google's, https://fcm.googleapis.com/v1; the push sandbox gives its own. It is passed to
	// firebase-admin-go as option.WithEndpoint, which the messaging client uses for
	// ".../projects/{id}/messages:send".
	Endpoint string
	// HTTPClient supplies the transport and timeout for FCM and OAuth2 token requests;
	// Nudge adds OAuth2 authentication on top of its transport. Default: a clone of
	// http.DefaultTransport that keeps up to 256 idle connections to a host (Go's default
	// of 2 would have an HTTP/1.1 endpoint dial a connection for most requests), with a 30s
	// timeout.
	HTTPClient *http.Client
	// Logger receives a debug line per token not delivered and a warning when credentials
	// are rejected. Default: discard.
	Logger *slog.Logger
}

// maxIdleConnsPerHost is the idle connections FCM's default transport keeps to its endpoint:
// more than cmd/worker's -push-concurrency (default 64) sends at once.
const maxIdleConnsPerHost = 256

// FCM sends notifications through Firebase Cloud Messaging HTTP v1 with firebase-admin-go.
// Each token is a separate messages:send request (SendEach, or Send for one token); the
// deprecated batch endpoint is never used. It is safe for concurrent use.
//
// firebase-admin-go retries 503 responses itself, sleeping up to two minutes and ignoring
// Nudge's limits. FCM keeps that loop from seeing 503s (see sdkRetryGuard) so that retry
// policy stays in one place, Retrier. The SDK still retries network errors (4 times, 0+1+2+4s,
// cut short when ctx ends).
type FCM struct {
	client    *messaging.Client
	transport http.RoundTripper // the base transport, for Close
	log       *slog.Logger
}

var _ Sender = (*FCM)(nil)

// serviceAccount holds the fields of a service-account key that NewFCM checks.
type serviceAccount struct {
	Type        string `json:"type"`
	ProjectID   string `json:"project_id"`
	ClientEmail string `json:"client_email"`
	PrivateKey  string `json:"private_key"`
	TokenURI    string `json:"token_uri"`
}

// NewFCM returns an FCM sender. It validates the configuration and the service account but
// makes no network call; the first Send fetches an OAuth2 access token from the service
// account's token_uri. ctx is only used while constructing.
func NewFCM(ctx context.Context, cfg FCMConfig) (*FCM, error) {
	creds, err := cfg.credentials()
	if err != nil {
		return nil, err
	}
	var sa serviceAccount
	if err := json.Unmarshal(creds, &sa); err != nil {
		return nil, fmt.Errorf("%w: fcm: parse service account: %w", ErrInvalidConfig, err)
	}
	// Accept only service-account keys: other credential types (external accounts) make the
	// auth library fetch arbitrary URLs named in the file.
	if sa.Type != "service_account" || sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, fmt.Errorf("%w: fcm: credentials are not a service-account key", ErrInvalidConfig)
	}
	project := cfg.ProjectID
	if project == "" {
		project = sa.ProjectID
	}
	if project == "" {
		return nil, fmt.Errorf("%w: fcm: no project id in config or credentials", ErrInvalidConfig)
	}
	if cfg.Endpoint != "" && !strings.HasPrefix(cfg.Endpoint, "http://") && !strings.HasPrefix(cfg.Endpoint, "https://") {
		return nil, fmt.Errorf("%w: fcm: endpoint %q is not an http(s) URL", ErrInvalidConfig, cfg.Endpoint)
	}

	timeout := 30 * time.Second
	var base http.RoundTripper
	if cfg.HTTPClient != nil {
		base = cfg.HTTPClient.Transport
		if cfg.HTTPClient.Timeout > 0 {
			timeout = cfg.HTTPClient.Timeout
		}
	}
	if base == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// Over HTTP/1.1 (an http:// endpoint: the push sandbox, a local proxy) each request
		// in flight needs a connection of its own, and Go keeps only 2 idle ones per host:
		// the others were closed after their answer and dialled again for the next send. Keep
		// as many as a worker sends at once. Over HTTP/2 (Google's endpoint) the requests
		// share a connection and this changes nothing.
		tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
		base = tr
	}

	// The OAuth2 library takes the client for token requests from the context, and keeps the
	// context for later refreshes: hand it one that is never cancelled.
	authCtx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient,
		&http.Client{Transport: base, Timeout: timeout})
	// Without WithTelemetryDisabled the transport wraps every send in OpenTelemetry's HTTP
	// instrumentation, which Nudge has no exporter for: its spans and metrics went nowhere,
	// for about a tenth of the worker's CPU a push. Nudge's own metrics count the sends.
	authed, err := htransport.NewTransport(authCtx, base,
		option.WithCredentialsJSON(creds),
		option.WithScopes(fcmScope),
		option.WithTelemetryDisabled())
	if err != nil {
		return nil, fmt.Errorf("%w: fcm: credentials: %w", ErrInvalidConfig, err)
	}
	// The guard enforces the timeout, not the http.Client: it must tell the client's own
	// timeout (an unknown outcome) from the caller's cancellation.
	hc := &http.Client{Transport: &sdkRetryGuard{next: authed, timeout: timeout}}

	// With WithHTTPClient the SDK uses hc as is (authentication included) and never looks
	// for default credentials.
	opts := []option.ClientOption{option.WithHTTPClient(hc)}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(strings.TrimRight(cfg.Endpoint, "/")))
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: project}, opts...)
	if err != nil {
		return nil, fmt.Errorf("fcm: new app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("fcm: messaging client: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FCM{client: client, transport: base, log: logger}, nil
}

func (cfg FCMConfig) credentials() ([]byte, error) {
	switch {
	case len(cfg.CredentialsJSON) > 0 && cfg.CredentialsFile != "":
		return nil, fmt.Errorf("%w: fcm: both CredentialsJSON and CredentialsFile set", ErrInvalidConfig)
	case len(cfg.CredentialsJSON) > 0:
		return cfg.CredentialsJSON, nil
	case cfg.CredentialsFile != "":
		b, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("%w: fcm: read credentials: %w", ErrInvalidConfig, err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%w: fcm: no credentials", ErrInvalidConfig)
	}
}

// Platform returns PlatformFCM.
func (f *FCM) Platform() string { return PlatformFCM }

// Close releases idle connections of the sender's transport.
func (f *FCM) Close() error {
	if c, ok := f.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return nil
}

// Send sends msg to every token, each as its own FCM request, concurrently (the SDK runs up
// to 50 at a time). See Sender for the contract.
func (f *FCM) Send(ctx context.Context, msg Message, tokens []string) ([]Result, error) {
	results, err := start(ctx, msg, tokens)
	if err != nil || len(tokens) == 0 {
		return results, err
	}
	now := time.Now()

	longest := ""
	for _, t := range tokens {
		if len(t) > len(longest) {
			longest = t
		}
	}
	fitted, _, err := fitPayload(msg, MaxPayloadBytes, func(m Message) ([]byte, error) {
		return json.Marshal(fcmMessage(m, longest, now))
	})
	if err != nil {
		return encodeFailed(PlatformFCM, results, tokens, err)
	}

	var idx []int // indexes of the tokens to send
	for i, t := range tokens {
		if t == "" {
			results[i] = Result{Token: t, Outcome: TokenInvalid, Reason: ReasonEmptyToken}
			continue
		}
		idx = append(idx, i)
	}
	for start := 0; start < len(idx); start += fcmMaxBatch {
		chunk := idx[start:min(start+fcmMaxBatch, len(idx))]
		if err := ctx.Err(); err != nil {
			for _, i := range idx[start:] {
				results[i] = Result{Token: tokens[i], Outcome: Retry, Reason: ReasonCanceled, Err: err}
			}
			break
		}
		msgs := make([]*messaging.Message, len(chunk))
		for j, i := range chunk {
			msgs[j] = fcmMessage(fitted, tokens[i], now)
		}
		br, err := f.sendEach(ctx, msgs)
		if err != nil {
			// sendEach fails as a whole only for a message the SDK itself rejects.
			return nil, fmt.Errorf("%w: fcm: %w", ErrInvalidMessage, err)
		}
		if len(br.Responses) != len(chunk) {
			return nil, fmt.Errorf("fcm: %d responses for %d messages", len(br.Responses), len(chunk))
		}
		for j, i := range chunk {
			results[i] = f.result(ctx, tokens[i], br.Responses[j], now)
		}
	}
	return finish(ctx, f.log, PlatformFCM, results)
}

// sendEach sends msgs with the SDK's SendEach, or one message with its Send: SendEach starts 50
// goroutines on every call, however few the messages, and the worker sends one a device. Like
// SendEach, it fails as a whole when the SDK rejects a message before any request: Send's error
// is then the SDK's own, as no request reached the transport (sdkRetryGuard marks the ones
// that do).
func (f *FCM) sendEach(ctx context.Context, msgs []*messaging.Message) (*messaging.BatchResponse, error) {
	if len(msgs) > 1 {
		return f.client.SendEach(ctx, msgs)
	}
	var sent atomic.Bool
	id, err := f.client.Send(context.WithValue(ctx, requestSentKey{}, &sent), msgs[0])
	if err != nil && !sent.Load() {
		return nil, err
	}
	return &messaging.BatchResponse{Responses: []*messaging.SendResponse{{Success: err == nil, MessageID: id, Error: err}}}, nil
}

func (f *FCM) result(ctx context.Context, token string, r *messaging.SendResponse, now time.Time) Result {
	if r.Success {
		return Result{Token: token, Outcome: Delivered, Reason: ReasonDelivered, MessageID: r.MessageID}
	}
	outcome, reason := classifyFCM(r.Error)
	if reason == ReasonNetwork && errorutils.HTTPResponse(r.Error) == nil {
		outcome, reason = fcmTransport(ctx, r.Error)
	}
	res := Result{Token: token, Outcome: outcome, Reason: reason, Err: r.Error}
	if outcome == Retry {
		if resp := errorutils.HTTPResponse(r.Error); resp != nil {
			res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
		}
	}
	return res
}

// fcmMessage maps msg to the FCM v1 message for one token: a notification (title, body), the
// data, Android collapse key, tag, notification count and localization keys, and for iOS
// devices reached through FCM the APNs badge, thread id, collapse id, localization keys and
// mutable-content.
func fcmMessage(msg Message, token string, now time.Time) *messaging.Message {
	android := &messaging.AndroidConfig{
		CollapseKey: msg.CollapseKey,
		Priority:    "high",
		Notification: &messaging.AndroidNotification{
			Tag:   msg.CollapseKey,
			Sound: msg.Sound,
		},
	}
	apnsHeaders := map[string]string{
		"apns-push-type": "alert",
		"apns-priority":  "10",
	}
	aps := &messaging.Aps{ThreadID: msg.ThreadID, Sound: msg.Sound, MutableContent: msg.MutableContent}
	if msg.TitleLocKey != "" || msg.BodyLocKey != "" {
		n := android.Notification
		n.TitleLocKey, n.TitleLocArgs, n.BodyLocKey, n.BodyLocArgs = msg.TitleLocKey, msg.TitleLocArgs, msg.BodyLocKey, msg.BodyLocArgs
		aps.Alert = &messaging.ApsAlert{Title: msg.Title, Body: msg.Body, TitleLocKey: msg.TitleLocKey, TitleLocArgs: msg.TitleLocArgs,
			LocKey: msg.BodyLocKey, LocArgs: msg.BodyLocArgs}
	}
	if msg.Badge >= 0 {
		android.Notification.NotificationCount = new(msg.Badge)
		aps.Badge = new(msg.Badge)
	}
	if msg.CollapseKey != "" {
		apnsHeaders["apns-collapse-id"] = msg.CollapseKey
	}
	if msg.TTL > 0 {
		android.TTL = new(msg.TTL)
		apnsHeaders["apns-expiration"] = strconv.FormatInt(now.Add(msg.TTL).Unix(), 10)
	}
	return &messaging.Message{
		Token:        token,
		Notification: &messaging.Notification{Title: msg.Title, Body: msg.Body},
		Data:         msg.data(),
		Android:      android,
		APNS: &messaging.APNSConfig{
			Headers: apnsHeaders,
			Payload: &messaging.APNSPayload{Aps: aps},
		},
	}
}

// transportHeader carries, on the 500 sdkRetryGuard makes of a request that got no answer,
// the reason transportOutcome gave it.
const transportHeader = "X-Nudge-Transport-Failure"
