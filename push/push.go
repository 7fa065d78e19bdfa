// Package push delivers reminder notifications to devices through Firebase Cloud Messaging
// and the Apple Push Notification service.
//
// The reminder worker depends only on [Sender]. [FCM] and [APNs] are the two implementations,
// each built on the provider's official client library (firebase-admin-go messaging and
// sideshow/apns2); [Retrier] wraps either one with Nudge's retry policy. A Sender never decides
// what happens to a device token: it reports one [Result] per token, and the caller removes
// [TokenInvalid] tokens from its device registry and re-queues [Retry] ones.
//
// Device tokens and message text are never logged in full; use [RedactToken].
package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nudgehq/nudge/event"
)

// Platform names, as returned by Sender.Platform and used as metric
// labels: the event contract's (event.PlatformFCM, event.PlatformAPNs).
const (
	PlatformFCM  = event.PlatformFCM
	PlatformAPNs = event.PlatformAPNs
)

// MaxPayloadBytes is the payload limit of both providers for an alert notification.
// Senders truncate the body, then the title, so that the encoded payload stays within it.
const MaxPayloadBytes = 4096

// maxCollapseKeyBytes is the limit APNs puts on apns-collapse-id; FCM accepts it too.
const maxCollapseKeyBytes = 64

var (
	// ErrInvalidConfig reports a sender or retrier configuration that cannot work.
	ErrInvalidConfig = errors.New("push: invalid config")
	// ErrInvalidMessage reports a Message that no provider would accept; see Message.Validate.
	ErrInvalidMessage = errors.New("push: invalid message")
	// ErrProviderAuth reports that the provider rejected Nudge's own credentials (OAuth2
	// service account for FCM, provider token for APNs). It fails the whole call.
	ErrProviderAuth = errors.New("push: provider rejected credentials")
	// ErrPayloadTooLarge is the Err of the results of a message that does not fit the
	// provider limit even with an empty title and body (its Data is too large).
	ErrPayloadTooLarge = errors.New("push: payload too large")
)

// Message is one notification, sent alike to every token of a Send call.
type Message struct {
	// Title and Body are the visible alert text; at least one must be set. Senders shorten
	// them (body first) when the payload would exceed MaxPayloadBytes.
	Title string
	Body  string
	// ConversationID is added to Data as "conversation_id" unless Data already has that key.
	ConversationID string
	// CollapseKey makes a newer notification replace an older one with the same key: FCM
	// collapse_key and Android notification tag, APNs apns-collapse-id. One per conversation.
	// At most 64 bytes.
	CollapseKey string
	// ThreadID groups notifications on iOS (aps thread-id).
	ThreadID string
	// Badge is the app icon badge, the user's total unread count. 0 clears the badge; a
	// negative value leaves it unchanged.
	Badge int
	// Data is delivered to the app alongside the alert. Keys reserved by FCM ("from",
	// "notification", "message_type", prefixes "google." and "gcm.") and "aps" are refused.
	Data map[string]string
	// Sound names the sound to play; "" means the platform's silent default.
	Sound string
	// TTL is how long the provider keeps the notification for an offline device; 0 means the
	// provider's default.
	TTL time.Duration
	// TitleLocKey and BodyLocKey, with their arguments, let an app that localizes on the
	// device show its own strings (APNs title-loc-key, loc-key; FCM Android title_loc_key,
	// body_loc_key). Title and Body stay the text a device without those strings shows.
	TitleLocKey  string
	TitleLocArgs []string
	BodyLocKey   string
	BodyLocArgs  []string
	// MutableContent lets the app's notification service extension rewrite the push before
	// it is shown (APNs mutable-content; for iOS devices through FCM too).
	MutableContent bool
	// Topic is the APNs topic (bundle id) of the push; "" means the sender's own. FCM
	// ignores it.
	Topic string
}

// Validate reports whether m can be sent by every Sender; the error wraps ErrInvalidMessage.
func (m Message) Validate() error {
	if m.Title == "" && m.Body == "" && m.TitleLocKey == "" && m.BodyLocKey == "" {
		return fmt.Errorf("%w: title and body are empty", ErrInvalidMessage)
	}
	if len(m.CollapseKey) > maxCollapseKeyBytes {
		return fmt.Errorf("%w: collapse key is %d bytes, limit %d", ErrInvalidMessage, len(m.CollapseKey), maxCollapseKeyBytes)
	}
	if m.TTL < 0 {
		return fmt.Errorf("%w: negative ttl %s", ErrInvalidMessage, m.TTL)
	}
	for k := range m.Data {
		if reservedDataKey(k) {
			return fmt.Errorf("%w: reserved data key %q", ErrInvalidMessage, k)
		}
	}
	return nil
}

func reservedDataKey(k string) bool {
	switch k {
	case "", "from", "notification", "message_type", "aps":
		return true
	}
	return strings.HasPrefix(k, "google.") || strings.HasPrefix(k, "gcm.")
}

// data returns the data map to send: Data plus conversation_id. The caller's map is not
// modified.
func (m Message) data() map[string]string {
	if len(m.Data) == 0 && m.ConversationID == "" {
		return nil
	}
	d := make(map[string]string, len(m.Data)+1)
	for k, v := range m.Data {
		d[k] = v
	}
	if _, ok := d["conversation_id"]; !ok && m.ConversationID != "" {
		d["conversation_id"] = m.ConversationID
	}
	return d
}

// Sender sends one message to a set of device tokens of one platform.
//
// Send returns exactly one Result per token, in the order of tokens, and a nil error when the
// call ran; per-token failures are in the results. A non-nil error means the whole call failed
// (ctx done, invalid message, rejected credentials). Even then, results is either nil or holds
// one Result per token with what is known (tokens already Delivered stay Delivered), so a
// caller can avoid sending twice to the same device.
//
// Implementations are safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, msg Message, tokens []string) ([]Result, error)
	// Platform returns PlatformFCM or PlatformAPNs.
	Platform() string
}

// Outcome tells the caller what to do with a token after a send.
type Outcome int

const (
	// Delivered: the provider accepted the notification.
	Delivered Outcome = iota + 1
	// TokenInvalid: the token will never work again; remove it and never retry.
	TokenInvalid
	// Retry: a transient failure (rate limit, provider 5xx, network); send again later,
	// after RetryAfter when it is set.
	Retry
	// Failed: a permanent failure of this message for this token (for example a payload
	// the provider refuses); do not retry, keep the token.
	Failed
	// Unknown: the request may have reached the provider, and its answer was lost (the
	// client timed out waiting, or the connection broke after the request was written). The
	// device may have the notification: sending the same one again could show it twice. Do
	// not retry; count it as its own outcome.
	Unknown
)

var outcomeNames = [...]string{
	Delivered:    "delivered",
	TokenInvalid: "token_invalid",
	Retry:        "retry",
	Failed:       "failed",
	Unknown:      "unknown",
}

func (o Outcome) String() string {
	if o > 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText makes an Outcome readable in JSON and structured logs.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Reason labels: short, stable, low-cardinality values of Result.Reason, fit for metrics.
const (
	ReasonDelivered = "delivered"

	// TokenInvalid.
	ReasonUnregistered     = "unregistered"               // FCM UNREGISTERED, APNs 410
	ReasonBadDeviceToken   = "bad_device_token"           // FCM INVALID_ARGUMENT on the token, APNs BadDeviceToken
	ReasonTokenNotForTopic = "device_token_not_for_topic" // APNs DeviceTokenNotForTopic
	ReasonSenderIDMismatch = "sender_id_mismatch"         // FCM SENDER_ID_MISMATCH
	ReasonEmptyToken       = "empty_token"                // not sent

	// Retry.
	ReasonRateLimited = "rate_limited" // 429, FCM QUOTA_EXCEEDED
	ReasonUnavailable = "unavailable"  // 503, FCM UNAVAILABLE
	ReasonInternal    = "internal"     // 500 and other 5xx, FCM INTERNAL
	ReasonNetwork     = "network"      // no HTTP response
	ReasonCanceled    = "canceled"     // ctx ended first

	// Unknown.
	ReasonTimeout    = "timeout"     // no answer within the client's timeout
	ReasonAnswerLost = "answer_lost" // the connection broke after the request was written

	// Failed.
	ReasonPayloadTooLarge = "payload_too_large"
	ReasonInvalidArgument = "invalid_argument" // FCM INVALID_ARGUMENT about the message
	ReasonProviderAuth    = "provider_auth"    // Nudge's credentials refused; Send returns ErrProviderAuth
	ReasonThirdPartyAuth  = "third_party_auth" // FCM could not authenticate to APNs or web push
	ReasonBadRequest      = "bad_request"      // other APNs 4xx
	ReasonTopicDisallowed = "topic_disallowed" // APNs TopicDisallowed: the key may not push to the topic (another team's app)
	ReasonUnknown         = "unknown"
)

// Result is the outcome of a send to one token.
type Result struct {
	Token   string
	Outcome Outcome
	// Reason is a short stable label for metrics and logs, e.g. "unregistered".
	Reason string
	// RetryAfter is the provider's Retry-After, when Outcome is Retry and it sent one.
	RetryAfter time.Duration
	// MessageID is the provider's id of the notification when Delivered (FCM message name,
	// APNs apns-id).
	MessageID string
	// Err is the underlying error when Outcome is not Delivered.
	Err error
}

// RedactToken returns a form of a device token that is safe to log: a short prefix, an
// ellipsis and the length, e.g. "d7f3a1…(64)".
func RedactToken(token string) string {
	n := min(6, len(token)/2)
	// Never cut inside a UTF-8 sequence, should a token hold non-ASCII bytes.
	for n > 0 && !utf8.RuneStart(token[n]) {
		n--
	}
	return token[:n] + "…(" + strconv.Itoa(len(token)) + ")"
}

// parseRetryAfter reads a Retry-After header value: delay-seconds or an HTTP date. It returns
// 0 for an empty, malformed, negative or past value.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		// Cap far beyond any sane value, before multiplying, so that huge inputs cannot
		// overflow into a negative duration.
		const maxSecs = int64(365 * 24 * time.Hour / time.Second)
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// start checks a Send's message and context and returns its results, one
// per token; a sender with no token has nothing more to do.
func start(ctx context.Context, msg Message, tokens []string) ([]Result, error) {
	if err := msg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return make([]Result, len(tokens)), nil
}

// encodeFailed fills results for a message whose payload could not be
// encoded: with a Failed result per token when no form of it fits
// (ErrPayloadTooLarge, the Sender contract), else as the call's error.
func encodeFailed(platform string, results []Result, tokens []string, err error) ([]Result, error) {
	if !errors.Is(err, ErrPayloadTooLarge) {
		return nil, fmt.Errorf("%s: encode payload: %w", platform, err)
	}
	for i, t := range tokens {
		results[i] = Result{Token: t, Outcome: Failed, Reason: ReasonPayloadTooLarge, Err: err}
	}
	return results, nil
}

// finish logs the tokens that were not delivered and turns rejected credentials and a done
// ctx into the whole-call error of the Sender contract.
func finish(ctx context.Context, log *slog.Logger, platform string, results []Result) ([]Result, error) {
	var authErr error
	for _, r := range results {
		if r.Outcome == Delivered {
			continue
		}
		if r.Reason == ReasonProviderAuth && authErr == nil {
			authErr = r.Err
		}
		log.LogAttrs(ctx, slog.LevelDebug, "push not delivered",
			slog.String("platform", platform),
			slog.String("token", RedactToken(r.Token)),
			slog.String("outcome", r.Outcome.String()),
			slog.String("reason", r.Reason),
			slog.Duration("retry_after", r.RetryAfter))
	}
	if authErr != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "push credentials rejected",
			slog.String("platform", platform), slog.String("err", authErr.Error()))
		return results, fmt.Errorf("%s: %w: %w", platform, ErrProviderAuth, authErr)
	}
	if err := ctx.Err(); err != nil {
		return results, err
	}
	return results, nil
}

// transportOutcome classifies an error of a request that got no HTTP answer. A request
// that certainly never reached the provider whole (the connection could not be made or broke
// while the request was written, the TLS handshake failed, the caller's ctx ended) is Retry; one that may have reached the provider
// (the client's own timeout, the connection lost while waiting for the answer) is Unknown.
func transportOutcome(ctx context.Context, err error) (Outcome, string) {
	var op *net.OpError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	switch {
	case ctx.Err() != nil:
		return Retry, ReasonCanceled
	case errors.As(err, &op) && (op.Op == "dial" || op.Op == "write" || op.Op == "readfrom"), errors.Is(err, syscall.ECONNREFUSED),
		errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &recErr),
		notSentMessage(err.Error()):
		return Retry, ReasonNetwork
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return Unknown, ReasonTimeout
	default:
		return Unknown, ReasonAnswerLost
	}
}

// notSentMessage recognises, by its text, an error that some layer (an OAuth2 transport, an
// SDK) wrapped without keeping the cause: a dial or a write that failed.
func notSentMessage(msg string) bool {
	for _, s := range []string{"dial tcp", "connect: connection refused", "write: broken pipe", "x509:", "tls: "} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
