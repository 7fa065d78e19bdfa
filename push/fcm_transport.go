package push

// The HTTP transport under the FCM SDK: the SDK's own retries turned off
// (the Retrier decides), and transport and OAuth failures answered as
// responses the classifier reads.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// sdkRetryGuard sits between firebase-admin-go and the authenticated transport.
//
// The SDK's HTTP client retries every 503 response (and network error) itself, up to 4 times,
// honouring a Retry-After of up to two minutes, with no setting to turn that off. That would
// hide rate signals from Retrier and hold a worker for minutes. The guard hands a 503 to the
// SDK as a 500, which it does not retry, and keeps the real status in a header that
// classifyFCM reads; the JSON error body, with status UNAVAILABLE, is untouched.
//
// It also turns an OAuth2 token request that the token endpoint refused (4xx: unknown key,
// bad signature) into a 401 UNAUTHENTICATED response; as a transport error the SDK would retry
// it for seconds, although it can never succeed.
//
// A request that got no answer is answered with a 500 as well, which the SDK does not retry,
// carrying transportOutcome's reason in transportHeader: one that may have reached FCM (a
// timeout, an answer lost) must not be sent again. The guard bounds each request with the
// client's timeout itself, so that it can tell its own timeout from the caller's ctx ending.
type sdkRetryGuard struct {
	next    http.RoundTripper
	timeout time.Duration
}

// requestSentKey is the context key of an *atomic.Bool that sdkRetryGuard sets when the
// context's request reaches it (FCM.sendEach).
type requestSentKey struct{}

func (g *sdkRetryGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if sent, ok := req.Context().Value(requestSentKey{}).(*atomic.Bool); ok {
		sent.Store(true)
	}
	ctx, cancel := context.WithTimeout(req.Context(), g.timeout)
	resp, err := g.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		timedOut := ctx.Err() != nil
		cancel()
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			return oauthRejected(req, re), nil
		}
		if req.Context().Err() != nil {
			return nil, err
		}
		_, reason := transportOutcome(req.Context(), err)
		if timedOut {
			reason = ReasonTimeout
		}
		return transportFailed(req, reason, err), nil
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	if resp.StatusCode == http.StatusServiceUnavailable {
		resp.Header.Set(upstreamStatusHeader, "503")
		resp.StatusCode = http.StatusInternalServerError
		resp.Status = "500 Internal Server Error (503 upstream)"
	}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base transport.
func (g *sdkRetryGuard) CloseIdleConnections() {
	if c, ok := g.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// cancelOnClose ends a request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func transportFailed(req *http.Request, reason string, err error) *http.Response {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code":    http.StatusInternalServerError,
		"message": "no answer from FCM: " + err.Error(),
		"status":  "INTERNAL",
	}})
	return &http.Response{
		Status:        "500 Internal Server Error (no answer)",
		StatusCode:    http.StatusInternalServerError,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}, transportHeader: {reason}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

func oauthRejected(req *http.Request, re *oauth2.RetrieveError) *http.Response {
	msg := fmt.Sprintf("oauth2 token request rejected with status %d", re.Response.StatusCode)
	if re.ErrorCode != "" {
		msg += ": " + re.ErrorCode
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code":    http.StatusUnauthorized,
		"message": msg,
		"status":  "UNAUTHENTICATED",
	}})
	return &http.Response{
		Status:        "401 Unauthorized",
		StatusCode:    http.StatusUnauthorized,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
