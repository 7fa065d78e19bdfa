package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestClassifyAPNs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status  int
		reason  string
		outcome Outcome
		label   string
	}{
		{410, "Unregistered", TokenInvalid, ReasonUnregistered},
		{410, "ExpiredToken", TokenInvalid, ReasonUnregistered},
		{410, "", TokenInvalid, ReasonUnregistered},
		{400, "BadDeviceToken", TokenInvalid, ReasonBadDeviceToken},
		{400, "DeviceTokenNotForTopic", TokenInvalid, ReasonTokenNotForTopic},
		{413, "PayloadTooLarge", Failed, ReasonPayloadTooLarge},
		{413, "", Failed, ReasonPayloadTooLarge},
		{429, "TooManyRequests", Retry, ReasonRateLimited},
		{429, "TooManyProviderTokenUpdates", Retry, ReasonRateLimited},
		{429, "", Retry, ReasonRateLimited},
		{500, "InternalServerError", Retry, ReasonInternal},
		{502, "", Retry, ReasonInternal},
		{503, "ServiceUnavailable", Retry, ReasonUnavailable},
		{503, "Shutdown", Retry, ReasonUnavailable},
		{503, "", Retry, ReasonUnavailable},
		{403, "InvalidProviderToken", Failed, ReasonProviderAuth},
		{403, "ExpiredProviderToken", Failed, ReasonProviderAuth},
		{403, "", Failed, ReasonProviderAuth},
		{400, "TopicDisallowed", Failed, ReasonTopicDisallowed},
		{400, "BadCollapseId", Failed, ReasonBadRequest},
		{404, "BadPath", Failed, ReasonBadRequest},
		{302, "", Failed, ReasonUnknown},
	} {
		outcome, label := classifyAPNs(tc.status, tc.reason)
		if outcome != tc.outcome || label != tc.label {
			t.Errorf("classifyAPNs(%d, %q) = %s %s, want %s %s", tc.status, tc.reason, outcome, label, tc.outcome, tc.label)
		}
	}
}

func TestClassifyInvalidArgument(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		body    string
		outcome Outcome
		label   string
	}{
		{"token message", `{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT"}}`,
			TokenInvalid, ReasonBadDeviceToken},
		{"token field violation", `{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT","details":[
			{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},
			{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}]}}`,
			TokenInvalid, ReasonBadDeviceToken},
		{"too big", `{"error":{"code":400,"message":"Message is too big","status":"INVALID_ARGUMENT"}}`, Failed, ReasonPayloadTooLarge},
		{"other field", `{"error":{"code":400,"message":"Invalid value at 'message.android.ttl'","status":"INVALID_ARGUMENT","details":[
			{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.android.ttl"}]}]}}`,
			Failed, ReasonInvalidArgument},
		{"not json", `<html>bad request</html>`, Failed, ReasonInvalidArgument},
		{"empty", ``, Failed, ReasonInvalidArgument},
	} {
		outcome, label := classifyInvalidArgument([]byte(tc.body))
		if outcome != tc.outcome || label != tc.label {
			t.Errorf("%s: got %s %s, want %s %s", tc.name, outcome, label, tc.outcome, tc.label)
		}
	}
}

func TestClassifyFCMNonProviderErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err     error
		outcome Outcome
		label   string
	}{
		{context.Canceled, Retry, ReasonCanceled},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), Retry, ReasonCanceled},
		// A 2xx whose body did not parse: maybe delivered, so not retried.
		{errors.New("error while parsing response: unexpected EOF"), Failed, ReasonUnknown},
	} {
		outcome, label := classifyFCM(tc.err)
		if outcome != tc.outcome || label != tc.label {
			t.Errorf("classifyFCM(%v) = %s %s, want %s %s", tc.err, outcome, label, tc.outcome, tc.label)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-3":                            0,
		" 7 ":                           7 * time.Second,
		"120":                           2 * time.Minute,
		"1.5":                           0,
		"soon":                          0,
		"99999999999999999999":          0, // does not parse as int64
		"9223372036854775807":           365 * 24 * time.Hour,
		"Sun, 01 Jun 2025 12:00:30 GMT": 30 * time.Second,
		"Sun, 01 Jun 2025 11:59:00 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	f.Add("120")
	f.Add("Wed, 21 Oct 2015 07:28:00 GMT")
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfter(v, now)
		if d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %s, negative", v, d)
		}
		if _, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && d > 365*24*time.Hour {
			t.Fatalf("parseRetryAfter(%q) = %s, above the cap", v, d)
		}
	})
}

func TestFitPayload(t *testing.T) {
	t.Parallel()
	encode := func(m Message) ([]byte, error) {
		return json.Marshal(map[string]any{"t": m.Title, "b": m.Body, "d": m.Data})
	}
	t.Run("fits untouched", func(t *testing.T) {
		msg := Message{Title: "hi", Body: "there"}
		got, b, err := fitPayload(msg, 100, encode)
		if err != nil || got.Body != "there" || got.Title != "hi" || len(b) > 100 {
			t.Fatalf("fitPayload = %+v, %d bytes, %v", got, len(b), err)
		}
	})
	t.Run("body cut first, escapes counted", func(t *testing.T) {
		msg := Message{Title: "title", Body: strings.Repeat("<&>\"é", 200)}
		got, b, err := fitPayload(msg, 300, encode)
		if err != nil || len(b) > 300 || got.Title != "title" || !strings.HasSuffix(got.Body, "…") {
			t.Fatalf("fitPayload = %+v, %d bytes, %v", got, len(b), err)
		}
		// Cut as little as needed: one more rune (at most 6 encoded bytes) would not fit.
		if len(b) < 300-6 {
			t.Errorf("fitPayload cut to %d bytes, limit 300: more than needed", len(b))
		}
	})
	t.Run("then title", func(t *testing.T) {
		msg := Message{Title: strings.Repeat("T", 500), Body: strings.Repeat("B", 500)}
		got, b, err := fitPayload(msg, 200, encode)
		if err != nil || len(b) > 200 || got.Body != "" || !strings.HasSuffix(got.Title, "…") {
			t.Fatalf("fitPayload = %+v, %d bytes, %v", got, len(b), err)
		}
	})
	t.Run("data too large", func(t *testing.T) {
		msg := Message{Title: "t", Body: "b", Data: map[string]string{"x": strings.Repeat("x", 300)}}
		if _, _, err := fitPayload(msg, 200, encode); !errors.Is(err, ErrPayloadTooLarge) {
			t.Fatalf("err = %v, want ErrPayloadTooLarge", err)
		}
	})
	t.Run("encoder error", func(t *testing.T) {
		boom := errors.New("boom")
		_, _, err := fitPayload(Message{Title: "t"}, 200, func(Message) ([]byte, error) { return nil, boom })
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
	})
}

func TestEqualJitterBounds(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, 1, 2, 3, 200 * time.Millisecond, 10 * time.Second} {
		for range 200 {
			if j := equalJitter(d); j < d/2 || j > d {
				t.Fatalf("equalJitter(%s) = %s, outside [%s, %s]", d, j, d/2, d)
			}
		}
	}
}

func TestMessageDataDoesNotAliasCaller(t *testing.T) {
	t.Parallel()
	in := map[string]string{"k": "v"}
	m := Message{Title: "t", ConversationID: "c", Data: in}
	d := m.data()
	if d["conversation_id"] != "c" || d["k"] != "v" {
		t.Fatalf("data() = %v", d)
	}
	if _, ok := in["conversation_id"]; ok {
		t.Fatal("data() modified the caller's map")
	}
	m.Data["conversation_id"] = "explicit"
	if got := m.data()["conversation_id"]; got != "explicit" {
		t.Fatalf("explicit conversation_id overridden: %q", got)
	}
	if (Message{Title: "t"}).data() != nil {
		t.Fatal("data() of a message without data is not nil")
	}
}
