package push

// What an FCM error means: the outcome and reason of a Result.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
)

// classifyFCM maps a per-message error of firebase-admin-go to an Outcome and a reason,
// with the SDK's own error helpers first and the HTTP status as the fallback.
func classifyFCM(err error) (Outcome, string) {
	resp := errorutils.HTTPResponse(err)
	if resp != nil {
		switch reason := resp.Header.Get(transportHeader); reason {
		case ReasonTimeout, ReasonAnswerLost:
			return Unknown, reason
		case ReasonNetwork:
			return Retry, reason
		}
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Retry, ReasonCanceled
	case messaging.IsUnregistered(err):
		return TokenInvalid, ReasonUnregistered
	case messaging.IsSenderIDMismatch(err):
		return TokenInvalid, ReasonSenderIDMismatch
	case messaging.IsInvalidArgument(err), errorutils.IsInvalidArgument(err):
		return classifyInvalidArgument(responseBody(resp))
	case messaging.IsQuotaExceeded(err), errorutils.IsResourceExhausted(err):
		return Retry, ReasonRateLimited
	case messaging.IsUnavailable(err), errorutils.IsUnavailable(err) && resp != nil,
		resp != nil && resp.Header.Get(upstreamStatusHeader) == "503":
		return Retry, ReasonUnavailable
	case messaging.IsInternal(err), errorutils.IsInternal(err):
		return Retry, ReasonInternal
	case messaging.IsThirdPartyAuthError(err):
		return Failed, ReasonThirdPartyAuth
	case errorutils.IsUnauthenticated(err), errorutils.IsPermissionDenied(err):
		return Failed, ReasonProviderAuth
	case resp == nil && (errorutils.IsUnavailable(err) || errorutils.IsDeadlineExceeded(err) || errorutils.IsUnknown(err)):
		// A FirebaseError without a response is a transport failure.
		return Retry, ReasonNetwork
	case resp != nil && resp.StatusCode == http.StatusTooManyRequests:
		return Retry, ReasonRateLimited
	case resp != nil && resp.StatusCode >= 500:
		return Retry, ReasonInternal
	default:
		return Failed, ReasonUnknown
	}
}

// fcmTransport classifies a request of the SDK that got no HTTP answer (see
// transportOutcome). The SDK keeps the kind of the failure, not the error: a timeout
// (DEADLINE_EXCEEDED), a connection that could not be made (UNAVAILABLE), or anything else
// (UNKNOWN), of which a failed TLS handshake certainly never sent the request.
func fcmTransport(ctx context.Context, err error) (Outcome, string) {
	switch {
	case ctx.Err() != nil:
		return Retry, ReasonCanceled
	case errorutils.IsDeadlineExceeded(err):
		return Unknown, ReasonTimeout
	case errorutils.IsUnavailable(err),
		strings.Contains(err.Error(), "x509:"), strings.Contains(err.Error(), "tls:"):
		return Retry, ReasonNetwork
	default:
		return Unknown, ReasonAnswerLost
	}
}

// classifyInvalidArgument tells an INVALID_ARGUMENT about the registration token (remove the
// token) from one about the message. FCM says which in the message text, and in older
// responses in a google.rpc.BadRequest field violation on "message.token".
func classifyInvalidArgument(body []byte) (Outcome, string) {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Details []struct {
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e) // a body that is not JSON is just not about the token
	msg := strings.ToLower(e.Error.Message)
	if strings.Contains(msg, "registration token") {
		return TokenInvalid, ReasonBadDeviceToken
	}
	for _, d := range e.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return TokenInvalid, ReasonBadDeviceToken
			}
		}
	}
	if strings.Contains(msg, "too big") || strings.Contains(msg, "too large") {
		return Failed, ReasonPayloadTooLarge
	}
	return Failed, ReasonInvalidArgument
}

func responseBody(resp *http.Response) []byte {
	if resp == nil || resp.Body == nil {
		return nil
	}
	// The SDK gives a buffered copy of the body; reading it has no side effect.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return b
}
