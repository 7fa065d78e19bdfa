package sandbox

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// TestMain checks that a closed sandbox leaves no goroutine behind. The test clients close
// their idle connections in t.Cleanup, so nothing needs ignoring.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type bundle struct {
	sb   *Server
	fcm  *http.Client // plain HTTP client for the FCM listener
	apns *http.Client // HTTP/2 client trusting the sandbox CA
}

func setup(t *testing.T, cfg Config) *bundle {
	t.Helper()
	sb, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	h2 := new(http.Protocols)
	h2.SetHTTP2(true)
	fcmTr := &http.Transport{}
	apnsTr := &http.Transport{Protocols: h2, TLSClientConfig: &tls.Config{RootCAs: sb.CertPool()}}
	t.Cleanup(fcmTr.CloseIdleConnections)
	t.Cleanup(apnsTr.CloseIdleConnections)
	return &bundle{
		sb:   sb,
		fcm:  &http.Client{Transport: fcmTr, Timeout: 10 * time.Second},
		apns: &http.Client{Transport: apnsTr, Timeout: 10 * time.Second},
	}
}

// accessToken runs the JWT-bearer grant with golang.org/x/oauth2, as firebase-admin-go does.
func (b *bundle) accessToken(t *testing.T, saJSON []byte) (string, error) {
	t.Helper()
	cfg, err := google.JWTConfigFromJSON(saJSON, scopeFCM)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, b.fcm)
	tok, err := cfg.TokenSource(ctx).Token()
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, c *http.Client, method, url string, header http.Header, body []byte) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func (b *bundle) fcmSend(t *testing.T, token string, message string) response {
	t.Helper()
	tok, err := b.accessToken(t, b.sb.Credentials().ServiceAccountJSON)
	if err != nil {
		t.Fatalf("access token: %v", err)
	}
	return do(t, b.fcm, "POST", b.sb.FCMEndpoint()+"/projects/nudge-sandbox/messages:send",
		http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}},
		[]byte(`{"message":`+strings.ReplaceAll(message, "TOKEN", token)+`}`))
}

// fcmErrorCode returns the status and FcmError code of an FCM error body.
func fcmErrorCode(t *testing.T, body []byte) (string, string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Status  string `json:"status"`
			Details []struct {
				Type      string `json:"@type"`
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	code := ""
	for _, d := range e.Error.Details {
		if d.Type == fcmErrorType {
			code = d.ErrorCode
		}
	}
	return e.Error.Status, code
}

func TestFCMTokenEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	c := b.sb.Credentials()
	if _, err := b.accessToken(t, c.ServiceAccountJSON); err != nil {
		t.Fatalf("valid assertion refused: %v", err)
	}

	b.sb.mu.Lock()
	key, email, kid := b.sb.apps[0].creds.saKey, b.sb.apps[0].creds.saEmail, b.sb.apps[0].creds.saKeyID
	b.sb.mu.Unlock()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tokenURL := b.sb.fcmURL + "/token"
	now := time.Now().Unix()
	claims := func(mut func(map[string]any)) map[string]any {
		c := map[string]any{"iss": email, "aud": tokenURL, "scope": scopeFCM, "iat": now, "exp": now + 3600}
		if mut != nil {
			mut(c)
		}
		return c
	}
	for _, tc := range []struct {
		name      string
		grant     string
		assertion string
		ok        bool
	}{
		{"valid", jwtBearerGrant, signRS256(t, key, kid, claims(nil)), true},
		{"cloud-platform scope", jwtBearerGrant, signRS256(t, key, kid, claims(func(c map[string]any) { c["scope"] = scopeCloud })), true},
		{"wrong grant", "client_credentials", signRS256(t, key, kid, claims(nil)), false},
		{"other key", jwtBearerGrant, signRS256(t, other, kid, claims(nil)), false},
		{"other kid", jwtBearerGrant, signRS256(t, key, "nope", claims(nil)), false},
		{"wrong audience", jwtBearerGrant, signRS256(t, key, kid, claims(func(c map[string]any) { c["aud"] = "https://oauth2.googleapis.com/token" })), false},
		{"wrong issuer", jwtBearerGrant, signRS256(t, key, kid, claims(func(c map[string]any) { c["iss"] = "x@y" })), false},
		{"no scope", jwtBearerGrant, signRS256(t, key, kid, claims(func(c map[string]any) { c["scope"] = "" })), false},
		{"expired", jwtBearerGrant, signRS256(t, key, kid, claims(func(c map[string]any) { c["iat"], c["exp"] = now-7200, now-3600 })), false},
		{"too long-lived", jwtBearerGrant, signRS256(t, key, kid, claims(func(c map[string]any) { c["exp"] = now + 7200 })), false},
		{"garbage", jwtBearerGrant, "not.a.jwt", false},
	} {
		form := url.Values{"grant_type": {tc.grant}, "assertion": {tc.assertion}}
		r := do(t, b.fcm, "POST", tokenURL, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, []byte(form.Encode()))
		if got := r.status == http.StatusOK; got != tc.ok {
			t.Errorf("%s: status %d %s, want ok=%v", tc.name, r.status, r.body, tc.ok)
		}
		if !tc.ok && !bytes.Contains(r.body, []byte(`"error"`)) {
			t.Errorf("%s: body %s is not an OAuth2 error", tc.name, r.body)
		}
	}
	if st := b.sb.Stats(); st.OAuthTokensIssued != 3 || st.OAuthTokensRefused != 8 {
		t.Errorf("stats issued %d refused %d, want 3 and 8", st.OAuthTokensIssued, st.OAuthTokensRefused)
	}
}

func TestFCMSendProtocol(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	tok := NewDeviceToken(PlatformFCM)
	send := b.sb.FCMEndpoint() + "/projects/nudge-sandbox/messages:send"
	body := []byte(`{"message":{"token":"` + tok + `","notification":{"title":"t"}}}`)

	r := do(t, b.fcm, "POST", send, nil, body)
	if st, _ := fcmErrorCode(t, r.body); r.status != 401 || st != "UNAUTHENTICATED" {
		t.Errorf("no token: %d %s", r.status, r.body)
	}
	r = do(t, b.fcm, "POST", send, http.Header{"Authorization": {"Bearer ya29.made-up"}}, body)
	if r.status != 401 {
		t.Errorf("unknown token: %d %s", r.status, r.body)
	}

	access, err := b.accessToken(t, b.sb.Credentials().ServiceAccountJSON)
	if err != nil {
		t.Fatal(err)
	}
	auth := http.Header{"Authorization": {"Bearer " + access}}
	r = do(t, b.fcm, "POST", b.sb.FCMEndpoint()+"/projects/other/messages:send", auth, body)
	if st, _ := fcmErrorCode(t, r.body); r.status != 403 || st != "PERMISSION_DENIED" {
		t.Errorf("other project: %d %s", r.status, r.body)
	}
	for name, bad := range map[string]string{
		"not json":   `{`,
		"no message": `{}`,
		"topic":      `{"message":{"topic":"news","notification":{"title":"t"}}}`,
		"bad token":  `{"message":{"token":"has space","notification":{"title":"t"}}}`,
		"too big":    `{"message":{"token":"` + tok + `","notification":{"body":"` + strings.Repeat("x", maxPayloadBytes) + `"}}}`,
	} {
		r = do(t, b.fcm, "POST", send, auth, []byte(bad))
		if st, code := fcmErrorCode(t, r.body); r.status != 400 || st != "INVALID_ARGUMENT" || code != "INVALID_ARGUMENT" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}

	r = do(t, b.fcm, "POST", send, auth, []byte(`{"validate_only":true,"message":{"token":"`+tok+`","notification":{"title":"t"}}}`))
	if r.status != 200 || len(b.sb.Deliveries()) != 0 {
		t.Errorf("validate_only: %d %s, %d deliveries", r.status, r.body, len(b.sb.Deliveries()))
	}
	r = do(t, b.fcm, "POST", send, auth, body)
	var ok struct {
		Name string `json:"name"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &ok) != nil || !strings.HasPrefix(ok.Name, "projects/nudge-sandbox/messages/") {
		t.Errorf("send: %d %s", r.status, r.body)
	}
	if ds := b.sb.Deliveries(); len(ds) != 1 || ds[0].MessageID != ok.Name || ds[0].Title != "t" {
		t.Errorf("deliveries %+v", ds)
	}

	// Rotation revokes issued access tokens, and the old key gets no new ones.
	oldSA := b.sb.Credentials().ServiceAccountJSON
	if err := b.sb.RotateCredentials(); err != nil {
		t.Fatal(err)
	}
	if r = do(t, b.fcm, "POST", send, auth, body); r.status != 401 {
		t.Errorf("after rotation: %d %s", r.status, r.body)
	}
	if _, err := b.accessToken(t, oldSA); err == nil {
		t.Error("old key still gets access tokens")
	}
	if r = do(t, b.fcm, "GET", b.sb.fcmURL+"/v1/nowhere", nil, nil); r.status != 404 {
		t.Errorf("unknown path: %d", r.status)
	}
}

func TestFCMFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fault      Fault
		status     int
		grpc, code string
	}{
		{Fault{Kind: FaultUnregistered}, 404, "NOT_FOUND", "UNREGISTERED"},
		{Fault{Kind: FaultBadToken}, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"},
		{Fault{Kind: FaultWrongSender}, 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"},
		{Fault{Kind: FaultRateLimited, RetryAfterSeconds: 9}, 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"},
		{Fault{Kind: FaultServerError}, 503, "UNAVAILABLE", "UNAVAILABLE"},
		{Fault{Kind: FaultServerError, Status: 500}, 500, "INTERNAL", "INTERNAL"},
	} {
		t.Run(fmt.Sprint(tc.fault.Kind, tc.fault.Status), func(t *testing.T) {
			t.Parallel()
			b := setup(t, Config{})
			tok := NewDeviceToken(PlatformFCM)
			tc.fault.Token, tc.fault.Times = tok, 1
			if err := b.sb.InjectFault(tc.fault); err != nil {
				t.Fatal(err)
			}
			r := b.fcmSend(t, tok, `{"token":"TOKEN","notification":{"title":"t"}}`)
			grpc, code := fcmErrorCode(t, r.body)
			if r.status != tc.status || grpc != tc.grpc || code != tc.code {
				t.Errorf("got %d %s %s, want %d %s %s", r.status, grpc, code, tc.status, tc.grpc, tc.code)
			}
			if tc.fault.RetryAfterSeconds > 0 && r.header.Get("Retry-After") != "9" {
				t.Errorf("Retry-After %q, want 9", r.header.Get("Retry-After"))
			}
			// Times: 1, so the next request is delivered.
			if r := b.fcmSend(t, tok, `{"token":"TOKEN","notification":{"title":"t"}}`); r.status != 200 {
				t.Errorf("second request: %d %s", r.status, r.body)
			}
			if st := b.sb.Stats(); st.FCM.Requests != 2 || st.FCM.Delivered != 1 || st.FCM.Errors[tc.code] != 1 {
				t.Errorf("stats %+v", st.FCM)
			}
		})
	}
}

func TestFaultCountsAndPlatforms(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	fcmTok := NewDeviceToken(PlatformFCM)
	if err := b.sb.InjectFault(Fault{Token: fcmTok, Kind: FaultServerError, Times: 2}); err != nil {
		t.Fatal(err)
	}
	if err := b.sb.InjectFault(Fault{Token: fcmTok, Kind: FaultUnregistered, Platform: PlatformAPNs}); err != nil {
		t.Fatal(err)
	}
	var statuses []int
	for range 3 {
		statuses = append(statuses, b.fcmSend(t, fcmTok, `{"token":"TOKEN","notification":{"title":"t"}}`).status)
	}
	if fmt.Sprint(statuses) != "[503 503 200]" {
		t.Errorf("statuses %v, want [503 503 200] (the APNs-only fault does not apply)", statuses)
	}
	set := b.sb.Faults()
	if len(set.Faults) != 1 || set.Faults[0].Platform != PlatformAPNs {
		t.Errorf("faults left %+v, want the APNs one", set.Faults)
	}
	b.sb.ClearFaults()
	if set := b.sb.Faults(); len(set.Faults) != 0 {
		t.Errorf("faults after clear: %+v", set.Faults)
	}
	for _, bad := range []Fault{
		{Kind: FaultUnregistered},
		{Token: "x", Kind: "melted"},
		{Token: "x", Kind: FaultUnregistered, Platform: "sms"},
		{Token: "x", Kind: FaultUnregistered, Times: -1},
		{Token: "x", Kind: FaultServerError, Status: 502},
		{Token: "x", Kind: FaultRateLimited, Status: 503},
	} {
		if err := b.sb.InjectFault(bad); err == nil {
			t.Errorf("InjectFault(%+v) accepted", bad)
		}
	}
}

func TestChaosIsSeededAndUnregisteredSticks(t *testing.T) {
	t.Parallel()
	chaos := Chaos{Seed: 42, ServerError: 0.2, RateLimited: 0.2, Unregistered: 0.1, RetryAfterSeconds: 1}
	run := func() []string {
		fs := newFaultState(chaos, 0)
		var out []string
		for i := range 200 {
			tok := fmt.Sprint("t", i%10)
			d := fs.decide(PlatformFCM, tok)
			if d == nil {
				out = append(out, "ok")
				continue
			}
			out = append(out, string(d.kind))
			if d.kind == FaultUnregistered {
				if again := fs.decide(PlatformFCM, tok); again == nil || again.kind != FaultUnregistered {
					t.Fatalf("token %s unregistered by chaos came back", tok)
				}
			}
		}
		return out
	}
	a, b := run(), run()
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("same seed, different sequences")
	}
	counts := map[string]int{}
	for _, o := range a {
		counts[o]++
	}
	if counts["ok"] == 0 || counts[string(FaultServerError)] == 0 || counts[string(FaultRateLimited)] == 0 || counts[string(FaultUnregistered)] == 0 {
		t.Errorf("outcome mix %v lacks a kind", counts)
	}
	for _, bad := range []Chaos{{ServerError: -0.1}, {RateLimited: 1.5}, {ServerError: 0.6, RateLimited: 0.6}, {RetryAfterSeconds: -1}} {
		if bad.validate() == nil {
			t.Errorf("Chaos %+v accepted", bad)
		}
	}
}

// signES256 signs an APNs provider token like apns2/token does.
func signES256(t *testing.T, key *ecdsa.PrivateKey, kid, iss string, iat int64) string {
	t.Helper()
	return signJWT(t, map[string]any{"alg": "ES256", "kid": kid}, map[string]any{"iss": iss, "iat": iat}, func(in []byte) []byte {
		sum := sha256.Sum256(in)
		r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig
	})
}

func signRS256(t *testing.T, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	return signJWT(t, map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid}, claims, func(in []byte) []byte {
		sum := sha256.Sum256(in)
		sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
}

func signJWT(t *testing.T, header, claims map[string]any, sign func([]byte) []byte) string {
	t.Helper()
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	in := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	return in + "." + enc.EncodeToString(sign([]byte(in)))
}

func (b *bundle) apnsHeaders(t *testing.T) http.Header {
	t.Helper()
	b.sb.mu.Lock()
	key, kid := b.sb.apps[0].creds.apnsKey, b.sb.apps[0].creds.apnsKeyID
	b.sb.mu.Unlock()
	return http.Header{
		"Authorization":  {"bearer " + signES256(t, key, kid, b.sb.cfg.APNsTeamID, time.Now().Unix())},
		"Apns-Topic":     {b.sb.cfg.APNsTopic},
		"Apns-Push-Type": {"alert"},
	}
}

func apnsReason(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("APNs error body %q: %v", body, err)
	}
	return e.Reason
}

func TestAPNsProtocol(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	tok := NewDeviceToken(PlatformAPNs)
	url := b.sb.APNsHost() + "/3/device/" + tok
	payload := []byte(`{"aps":{"alert":{"title":"T","body":"B"},"badge":3,"thread-id":"th","sound":{"name":"ping","critical":1}},"conversation_id":"c1","n":7}`)
	b.sb.mu.Lock()
	key, kid := b.sb.apps[0].creds.apnsKey, b.sb.apps[0].creds.apnsKeyID
	b.sb.mu.Unlock()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	team := b.sb.cfg.APNsTeamID
	now := time.Now().Unix()

	for _, tc := range []struct {
		name   string
		method string
		path   string
		mut    func(h http.Header)
		body   []byte
		status int
		reason string
	}{
		{"no provider token", "POST", url, func(h http.Header) { h.Del("Authorization") }, payload, 403, reasonMissingProviderToken},
		{"other key", "POST", url, func(h http.Header) { h.Set("Authorization", "bearer "+signES256(t, other, kid, team, now)) }, payload, 403, reasonInvalidProviderToken},
		{"other kid", "POST", url, func(h http.Header) { h.Set("Authorization", "bearer "+signES256(t, key, "XXXXXXXXXX", team, now)) }, payload, 403, reasonInvalidProviderToken},
		{"other team", "POST", url, func(h http.Header) { h.Set("Authorization", "bearer "+signES256(t, key, kid, "OTHERTEAM1", now)) }, payload, 403, reasonInvalidProviderToken},
		{"stale token", "POST", url, func(h http.Header) { h.Set("Authorization", "bearer "+signES256(t, key, kid, team, now-7200)) }, payload, 403, reasonExpiredProviderToken},
		{"future token", "POST", url, func(h http.Header) { h.Set("Authorization", "bearer "+signES256(t, key, kid, team, now+3600)) }, payload, 403, reasonInvalidProviderToken},
		{"basic auth", "POST", url, func(h http.Header) { h.Set("Authorization", "basic abc") }, payload, 403, reasonInvalidProviderToken},
		{"no topic", "POST", url, func(h http.Header) { h.Del("Apns-Topic") }, payload, 400, reasonMissingTopic},
		{"other topic", "POST", url, func(h http.Header) { h.Set("Apns-Topic", "com.other") }, payload, 400, reasonDeviceTokenNotForTopic},
		{"push type", "POST", url, func(h http.Header) { h.Set("Apns-Push-Type", "shout") }, payload, 400, reasonInvalidPushType},
		{"priority", "POST", url, func(h http.Header) { h.Set("Apns-Priority", "7") }, payload, 400, reasonBadPriority},
		{"collapse id", "POST", url, func(h http.Header) { h.Set("Apns-Collapse-Id", strings.Repeat("c", 65)) }, payload, 400, reasonBadCollapseID},
		{"expiration", "POST", url, func(h http.Header) { h.Set("Apns-Expiration", "tomorrow") }, payload, 400, reasonBadExpirationDate},
		{"apns-id", "POST", url, func(h http.Header) { h.Set("Apns-Id", "not-a-uuid") }, payload, 400, reasonBadMessageID},
		{"bad device token", "POST", b.sb.APNsHost() + "/3/device/xyz", nil, payload, 400, reasonBadDeviceToken},
		{"no device token", "POST", b.sb.APNsHost() + "/3/device/", nil, payload, 400, reasonMissingDeviceToken},
		{"empty payload", "POST", url, nil, nil, 400, reasonPayloadEmpty},
		{"not json", "POST", url, nil, []byte("hello"), 400, badPayload},
		{"too large", "POST", url, nil, []byte(`{"aps":{"alert":"` + strings.Repeat("x", maxPayloadBytes) + `"}}`), 413, reasonPayloadTooLarge},
		{"path", "POST", b.sb.APNsHost() + "/2/device/" + tok, nil, payload, 404, reasonBadPath},
		{"method", "GET", url, nil, nil, 405, reasonMethodNotAllowed},
	} {
		h := b.apnsHeaders(t)
		if tc.mut != nil {
			tc.mut(h)
		}
		r := do(t, b.apns, tc.method, tc.path, h, tc.body)
		if r.status != tc.status || apnsReason(t, r.body) != tc.reason || r.header.Get("apns-id") == "" {
			t.Errorf("%s: %d %s (apns-id %q), want %d %s", tc.name, r.status, r.body, r.header.Get("apns-id"), tc.status, tc.reason)
		}
	}
	if n := len(b.sb.Deliveries()); n != 0 {
		t.Fatalf("%d deliveries from rejected requests", n)
	}

	h := b.apnsHeaders(t)
	h.Set("Apns-Collapse-Id", "c1")
	h.Set("Apns-Priority", "10")
	h.Set("Apns-Id", "123e4567-e89b-12d3-a456-426655440000")
	r := do(t, b.apns, "POST", url, h, payload)
	if r.status != 200 || r.header.Get("apns-id") != "123e4567-e89b-12d3-a456-426655440000" || len(r.body) != 0 {
		t.Fatalf("send: %d %q apns-id %q", r.status, r.body, r.header.Get("apns-id"))
	}
	ds := b.sb.Deliveries()
	if len(ds) != 1 {
		t.Fatalf("%d deliveries, want 1", len(ds))
	}
	d := ds[0]
	if d.Title != "T" || d.Body != "B" || d.Badge == nil || *d.Badge != 3 || d.ThreadID != "th" || d.Sound != "ping" ||
		d.CollapseKey != "c1" || d.Priority != "10" || d.PushType != "alert" || d.Data["conversation_id"] != "c1" || d.Data["n"] != "7" ||
		d.PayloadBytes != len(payload) {
		t.Errorf("delivery %+v", d)
	}
}

func TestAPNsFaults(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	payload := []byte(`{"aps":{"alert":"hi"}}`)
	for _, tc := range []struct {
		fault  Fault
		status int
		reason string
	}{
		{Fault{Kind: FaultUnregistered}, 410, reasonUnregistered},
		{Fault{Kind: FaultBadToken}, 400, reasonBadDeviceToken},
		{Fault{Kind: FaultWrongSender}, 400, reasonDeviceTokenNotForTopic},
		{Fault{Kind: FaultRateLimited, RetryAfterSeconds: 4}, 429, reasonTooManyRequests},
		{Fault{Kind: FaultServerError}, 503, reasonServiceUnavailable},
		{Fault{Kind: FaultServerError, Status: 500}, 500, reasonInternalServerError},
	} {
		tok := NewDeviceToken(PlatformAPNs)
		tc.fault.Token = tok
		if err := b.sb.InjectFault(tc.fault); err != nil {
			t.Fatal(err)
		}
		r := do(t, b.apns, "POST", b.sb.APNsHost()+"/3/device/"+tok, b.apnsHeaders(t), payload)
		if r.status != tc.status || apnsReason(t, r.body) != tc.reason {
			t.Errorf("%s: %d %s, want %d %s", tc.fault.Kind, r.status, r.body, tc.status, tc.reason)
		}
		if tc.status == 410 {
			var e struct {
				Timestamp int64 `json:"timestamp"`
			}
			if json.Unmarshal(r.body, &e); e.Timestamp < time.Now().Add(-time.Minute).UnixMilli() {
				t.Errorf("410 timestamp %d is not a recent unix time in ms", e.Timestamp)
			}
		}
		if tc.fault.RetryAfterSeconds > 0 && r.header.Get("Retry-After") != "4" {
			t.Errorf("Retry-After %q, want 4", r.header.Get("Retry-After"))
		}
	}
}

func TestAPNsIsHTTP2Only(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	tr := &http.Transport{Protocols: h1, TLSClientConfig: &tls.Config{RootCAs: b.sb.CertPool()}}
	t.Cleanup(tr.CloseIdleConnections)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", b.sb.APNsHost()+"/3/device/00", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("HTTP/1.1 request answered %d, want a failed TLS handshake", resp.StatusCode)
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Latency: 40 * time.Millisecond})
	start := time.Now()
	if r := b.fcmSend(t, NewDeviceToken(PlatformFCM), `{"token":"TOKEN","notification":{"title":"t"}}`); r.status != 200 {
		t.Fatalf("send: %d", r.status)
	}
	if elapsed := time.Since(start); elapsed < 40*time.Millisecond {
		t.Errorf("request took %s, want at least the 40ms latency", elapsed)
	}
}

func TestControlAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	ctl := b.sb.ControlURL()
	if r := do(t, b.fcm, "GET", ctl+"/healthz", nil, nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	tok := NewDeviceToken(PlatformFCM)
	set := `{"faults":[{"token":"` + tok + `","kind":"rate_limited","times":1,"retry_after_seconds":2}],
		"chaos":{"seed":7},"latency_ms":1}`
	r := do(t, b.fcm, "POST", ctl+"/faults", nil, []byte(set))
	var got FaultSet
	if r.status != 200 || json.Unmarshal(r.body, &got) != nil || len(got.Faults) != 1 || *got.LatencyMS != 1 || got.Chaos.Seed != 7 {
		t.Fatalf("POST faults: %d %s", r.status, r.body)
	}
	for _, bad := range []string{`{`, `{"faults":[{"kind":"unregistered"}]}`, `{"chaos":{"server_error":2}}`, `{"latency_ms":-1}`, `{"nope":1}`} {
		if r := do(t, b.fcm, "POST", ctl+"/faults", nil, []byte(bad)); r.status != 400 {
			t.Errorf("POST faults %s: %d, want 400", bad, r.status)
		}
	}
	if len(b.sb.Faults().Faults) != 1 {
		t.Error("a rejected fault set changed the faults")
	}
	if r := b.fcmSend(t, tok, `{"token":"TOKEN","notification":{"title":"t"}}`); r.status != 429 {
		t.Errorf("faulted send: %d", r.status)
	}
	other := NewDeviceToken(PlatformFCM)
	for _, tk := range []string{tok, other} {
		if r := b.fcmSend(t, tk, `{"token":"TOKEN","notification":{"title":"t"}}`); r.status != 200 {
			t.Errorf("send: %d", r.status)
		}
	}
	r = do(t, b.fcm, "GET", ctl+"/deliveries?token="+url.QueryEscape(tok), nil, nil)
	var ds struct {
		Deliveries []Delivery `json:"deliveries"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &ds) != nil || len(ds.Deliveries) != 1 || ds.Deliveries[0].Token != tok {
		t.Errorf("GET deliveries?token: %d %s", r.status, r.body)
	}
	var listed struct {
		Deliveries []Delivery `json:"deliveries"`
		Matching   int        `json:"matching"`
		Shown      int        `json:"shown"`
	}
	r = do(t, b.fcm, "GET", ctl+"/deliveries?limit=1", nil, nil)
	if json.Unmarshal(r.body, &listed) != nil || listed.Matching != 2 || listed.Shown != 1 || len(listed.Deliveries) != 1 || listed.Deliveries[0].Token != other {
		t.Errorf("GET deliveries?limit=1: want the newest (to %s) of 2: %s", other[:8], r.body)
	}
	r = do(t, b.fcm, "GET", ctl+"/deliveries?limit=1&order=oldest", nil, nil)
	if json.Unmarshal(r.body, &listed) != nil || len(listed.Deliveries) != 1 || listed.Deliveries[0].Token != tok {
		t.Errorf("GET deliveries?order=oldest: want the oldest (to %s): %s", tok[:8], r.body)
	}
	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "order=up"} {
		if r := do(t, b.fcm, "GET", ctl+"/deliveries?"+bad, nil, nil); r.status != 400 || !bytes.Contains(r.body, []byte(strings.SplitN(bad, "=", 2)[0]+":")) {
			t.Errorf("GET deliveries?%s: %d %s, want 400 naming the parameter", bad, r.status, r.body)
		}
	}
	r = do(t, b.fcm, "GET", ctl+"/deliveries?platform=apns", nil, nil)
	if json.Unmarshal(r.body, &ds) != nil || len(ds.Deliveries) != 0 {
		t.Errorf("GET deliveries?platform=apns: %s", r.body)
	}
	var st Stats
	r = do(t, b.fcm, "GET", ctl+"/stats", nil, nil)
	if json.Unmarshal(r.body, &st) != nil || st.FCM.Requests != 3 || st.FCM.Delivered != 2 || st.FCM.Errors["QUOTA_EXCEEDED"] != 1 || st.Deliveries != 2 {
		t.Errorf("GET stats: %s", r.body)
	}
	if r := do(t, b.fcm, "DELETE", ctl+"/deliveries", nil, nil); r.status != 204 || len(b.sb.Deliveries()) != 0 || b.sb.Stats().FCM.Requests != 0 {
		t.Errorf("DELETE deliveries: %d", r.status)
	}
	if r := do(t, b.fcm, "DELETE", ctl+"/faults", nil, nil); r.status != 204 || *b.sb.Faults().LatencyMS != 0 {
		t.Errorf("DELETE faults: %d", r.status)
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	tok := NewDeviceToken(PlatformFCM)
	done := make(chan error, 1)
	started := make(chan struct{})
	var once sync.Once
	go func() {
		done <- b.sb.WaitFor(t.Context(), func(ds []Delivery) bool {
			once.Do(func() { close(started) })
			return len(filterDeliveries(ds, tok, "")) == 2
		})
	}()
	<-started
	for range 2 {
		b.fcmSend(t, tok, `{"token":"TOKEN","notification":{"title":"t"}}`)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitFor: %v", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.sb.WaitFor(ctx, func([]Delivery) bool { return false }); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitFor(cancelled) = %v", err)
	}
	// Reset wakes waiters too.
	go func() {
		done <- b.sb.WaitFor(t.Context(), func(ds []Delivery) bool { return len(ds) == 0 })
	}()
	b.sb.Reset()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestMaxDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{MaxDeliveries: 3})
	var toks []string
	for range 5 {
		tok := NewDeviceToken(PlatformFCM)
		toks = append(toks, tok)
		b.fcmSend(t, tok, `{"token":"TOKEN","notification":{"title":"t"}}`)
	}
	ds := b.sb.Deliveries()
	if len(ds) != 3 || ds[0].Token != toks[2] || ds[2].Token != toks[4] {
		t.Errorf("kept %d deliveries, want the newest 3", len(ds))
	}
}

func TestWriteCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{ProjectID: "demo-project", APNsTopic: "com.example.demo", APNsTeamID: "TEAM123456"})
	dir := filepath.Join(t.TempDir(), "creds")
	if err := b.sb.WriteCredentials(dir); err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(filepath.Join(dir, EnvFile))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for line := range strings.Lines(string(env)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		vars[k] = v
	}
	c := b.sb.Credentials()
	for k, want := range map[string]string{
		"NUDGE_FCM_PROJECT_ID":           "demo-project",
		"NUDGE_FCM_ENDPOINT":             c.FCMEndpoint,
		"NUDGE_FCM_CREDENTIALS_FILE":     filepath.Join(dir, ServiceAccountFile),
		"NUDGE_APNS_HOST":                c.APNsHost,
		"NUDGE_APNS_KEY_FILE":            filepath.Join(dir, APNsKeyFile),
		"NUDGE_APNS_KEY_ID":              c.APNsKeyID,
		"NUDGE_APNS_TEAM_ID":             "TEAM123456",
		"NUDGE_APNS_TOPIC":               "com.example.demo",
		"NUDGE_APNS_CA_FILE":             filepath.Join(dir, CACertFile),
		"NUDGE_PUSH_SANDBOX_CONTROL_URL": c.ControlURL,
	} {
		if vars[k] != want {
			t.Errorf("%s=%q, want %q", k, vars[k], want)
		}
	}
	for name, want := range map[string][]byte{ServiceAccountFile: c.ServiceAccountJSON, APNsKeyFile: c.APNsKeyP8, CACertFile: c.CACertPEM} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v or content differs", name, err)
		}
	}
	var sa map[string]string
	if err := json.Unmarshal(c.ServiceAccountJSON, &sa); err != nil || sa["token_uri"] != b.sb.fcmURL+"/token" || sa["project_id"] != "demo-project" || sa["type"] != "service_account" {
		t.Errorf("service account %v, %v", sa, err)
	}
}

func TestCloseAndContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	sb, err := Start(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	cancel() // closes the sandbox
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	// Close is idempotent, and after it the listener is gone.
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Get(sb.ControlURL() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("sandbox still serving after its context ended")
	}
	if _, err := Start(t.Context(), Config{FCMAddr: "256.0.0.1:1"}); err == nil {
		t.Error("Start on an invalid address succeeded")
	}
	if _, err := Start(t.Context(), Config{MaxDeliveries: -1}); err == nil {
		t.Error("Start with negative MaxDeliveries succeeded")
	}
}

func TestNewDeviceToken(t *testing.T) {
	t.Parallel()
	a := NewDeviceToken(PlatformAPNs)
	if len(a) != 64 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("APNs token %q", a)
	}
	f := NewDeviceToken(PlatformFCM)
	if !strings.Contains(f, ":APA91b") || !validFCMToken(f) || f == NewDeviceToken(PlatformFCM) {
		t.Errorf("FCM token %q", f)
	}
}

// FuzzParseJWT: the token parser never panics, and verification of whatever parses fails
// cleanly without the key.
func FuzzParseJWT(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQyJ9.eyJpc3MiOiJURUFNIiwiaWF0IjoxfQ.AAAA")
	f.Add("a.b.c")
	f.Add("..")
	f.Add("")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseJWT(s)
		if err != nil {
			return
		}
		if tok.verifyES256(&key.PublicKey) == nil || tok.verifyRS256(&rsaKey.PublicKey) == nil {
			t.Fatalf("forged token %q verified", s)
		}
	})
}
