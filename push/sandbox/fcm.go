package sandbox

import (
	"cmp"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"firebase.google.com/go/v4/messaging"
)

const (
	jwtBearerGrant   = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	accessTokenTTL   = time.Hour
	maxClockSkew     = 5 * time.Minute
	maxRequestBytes  = 1 << 20
	fcmErrorType     = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
	scopeFCM         = "https://www.googleapis.com/auth/firebase.messaging"
	scopeCloud       = "https://www.googleapis.com/auth/cloud-platform"
	googleJSONHeader = "application/json; charset=UTF-8"
)

// fcmHandler routes the plain-HTTP listener: FCM, the OAuth2 token endpoint and the control
// API.
func (s *Server) fcmHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.serveToken)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", s.serveFCMSend)
	s.controlRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL "+r.URL.Path+" was not found on this server.", "")
	})
	return mux
}

// serveToken is the OAuth2 token endpoint of the generated service account: it accepts the
// JWT-bearer grant (RFC 7523) with an RS256 assertion signed by the current service-account
// key, as golang.org/x/oauth2/jwt sends it, and issues an access token for the send endpoint.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, "invalid_request", "malformed form body")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != jwtBearerGrant {
		writeOAuthError(w, "unsupported_grant_type", "Invalid grant_type: "+gt)
		return
	}
	now := s.cfg.Now()
	assertion := r.PostForm.Get("assertion")
	// The app whose service account signed the assertion: the first that verifies it.
	var (
		signer  *app
		keyID   string
		problem = "Invalid JWT: unknown issuer."
	)
	s.mu.Lock()
	apps := slices.Clone(s.apps)
	creds := make([]credentials, len(apps))
	for i, a := range apps {
		creds[i] = a.creds
	}
	s.mu.Unlock()
	for i, a := range apps {
		p := verifyAssertion(assertion, &creds[i].saKey.PublicKey, creds[i].saKeyID, creds[i].saEmail, s.fcmURL+"/token", now)
		if p == "" {
			signer, keyID, problem = a, creds[i].saKeyID, ""
			break
		}
		if p != "Invalid JWT: unknown issuer." {
			problem = p // the app it claims to be of says why
		}
	}
	if problem != "" {
		s.mu.Lock()
		s.rec.stats.OAuthTokensRefused++
		s.mu.Unlock()
		s.log.Debug("sandbox oauth2 assertion refused", slog.String("problem", problem))
		writeOAuthError(w, "invalid_grant", problem)
		return
	}

	tok := "ya29.sandbox." + base64.RawURLEncoding.EncodeToString(randomBytes(32))
	s.mu.Lock()
	// The map holds the tokens of the current key only, and expired ones are pruned here, so
	// it stays small.
	for t, exp := range signer.creds.accessTokens {
		if !now.Before(exp) {
			delete(signer.creds.accessTokens, t)
		}
	}
	if signer.creds.saKeyID == keyID { // not rotated meanwhile
		signer.creds.accessTokens[tok] = now.Add(accessTokenTTL)
	}
	s.rec.stats.OAuthTokensIssued++
	s.mu.Unlock()

	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_in":   int(accessTokenTTL/time.Second) - 1,
		"token_type":   "Bearer",
	})
}

// verifyAssertion checks a JWT-bearer assertion as Google's token endpoint does: signature,
// issuer, audience, scope and lifetime (at most one hour). It returns "" for a valid
// assertion, else the error_description Google would send.
func verifyAssertion(assertion string, pub *rsa.PublicKey, keyID, email, audience string, now time.Time) string {
	t, err := parseJWT(assertion)
	if err != nil {
		return "Invalid JWT: malformed."
	}
	if t.header.Kid != "" && t.header.Kid != keyID || t.verifyRS256(pub) != nil {
		return "Invalid JWT Signature."
	}
	c := t.claims
	lifetime := "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
	switch {
	case c.Iss != email:
		return "Invalid JWT: unknown issuer."
	case c.Aud != audience:
		return "Invalid JWT: Failed audience check."
	case c.Iat == 0 || c.Exp == 0 || c.Exp-c.Iat > int64(accessTokenTTL/time.Second):
		return lifetime
	case time.Unix(c.Iat, 0).After(now.Add(maxClockSkew)) || !now.Before(time.Unix(c.Exp, 0).Add(maxClockSkew)):
		return lifetime
	case !hasScope(c.Scope, scopeFCM) && !hasScope(c.Scope, scopeCloud):
		return "Invalid OAuth scope or ID token audience provided."
	}
	return ""
}

func hasScope(scopes, want string) bool {
	for _, sc := range strings.Fields(scopes) {
		if sc == want {
			return true
		}
	}
	return false
}

// fcmAuthorized returns the app whose current access token r carries, nil if none.
func (s *Server) fcmAuthorized(r *http.Request) *app {
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.apps {
		if exp, ok := a.creds.accessTokens[tok]; ok && s.cfg.Now().Before(exp) {
			return a
		}
	}
	return nil
}

// fcmSendRequest is the body of messages:send.
type fcmSendRequest struct {
	ValidateOnly bool            `json:"validate_only"`
	Message      json.RawMessage `json:"message"`
}

func (s *Server) serveFCMSend(w http.ResponseWriter, r *http.Request) {
	defer s.countRequest(PlatformFCM)()
	if !s.delay(r) {
		return
	}
	sender := s.fcmAuthorized(r)
	if sender == nil {
		s.fcmError(w, http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "")
		return
	}
	// A service account may send for its own project only.
	if p := r.PathValue("project"); p != sender.cfg.ProjectID {
		s.fcmError(w, http.StatusForbidden, "PERMISSION_DENIED",
			"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/"+p+"' (or it may not exist).", "")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	var req fcmSendRequest
	var msg messaging.Message
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err == nil && len(req.Message) == 0 {
		err = errors.New("no message")
	}
	if err == nil {
		err = json.Unmarshal(req.Message, &msg)
	}
	if err != nil {
		s.fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error(), "INVALID_ARGUMENT")
		return
	}
	if msg.Token == "" {
		s.fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Recipient of the message is not set (the sandbox supports token messages only).", "INVALID_ARGUMENT")
		return
	}
	if !validFCMToken(msg.Token) {
		s.fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT")
		return
	}
	if len(req.Message) > maxPayloadBytes {
		s.fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT",
			fmt.Sprintf("Message is too big: %d bytes, limit %d", len(req.Message), maxPayloadBytes), "INVALID_ARGUMENT")
		return
	}

	s.mu.Lock()
	d := s.faults.decide(PlatformFCM, msg.Token)
	s.mu.Unlock()
	if d != nil && d.kind != FaultLostAnswer {
		s.fcmFault(w, d)
		return
	}
	if req.ValidateOnly {
		writeJSON(w, http.StatusOK, map[string]string{"name": "projects/" + sender.cfg.ProjectID + "/messages/fake_message_id"})
		return
	}
	id := "projects/" + sender.cfg.ProjectID + "/messages/0:" + strconv.FormatInt(s.cfg.Now().UnixMicro(), 10) + "%" + randomID(16)
	delivery := fcmDelivery(&msg, id, len(req.Message), s.cfg.Now())
	delivery.App = sender.cfg.Name
	s.record(delivery)
	s.log.Debug("sandbox fcm delivered", slog.String("token", redact(msg.Token)))
	if d != nil {
		loseAnswer(r, d)
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": id})
}

// fcmFault answers a request the fault engine chose to fail, as FCM would.
func (s *Server) fcmFault(w http.ResponseWriter, d *decision) {
	if d.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(d.retryAfter))
	}
	switch d.kind {
	case FaultUnregistered:
		s.fcmError(w, http.StatusNotFound, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
	case FaultBadToken:
		s.fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT")
	case FaultWrongSender:
		s.fcmError(w, http.StatusForbidden, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
	case FaultRateLimited:
		s.fcmError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests' of service 'fcm.googleapis.com'.", "QUOTA_EXCEEDED")
	case FaultServerError:
		if d.status == http.StatusInternalServerError {
			s.fcmError(w, http.StatusInternalServerError, "INTERNAL", "Internal error encountered.", "INTERNAL")
		} else {
			s.fcmError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
		}
	}
}

// fcmError writes an FCM v1 error and counts it by FCM error code (else status).
func (s *Server) fcmError(w http.ResponseWriter, status int, grpcStatus, message, fcmCode string) {
	code := fcmCode
	if code == "" {
		code = grpcStatus
	}
	s.countError(PlatformFCM, code)
	writeGoogleError(w, status, grpcStatus, message, fcmCode)
}

// writeGoogleError writes Google's JSON error format, with an FcmError detail when fcmCode
// is set:
//
//	{"error":{"code":404,"message":"...","status":"NOT_FOUND",
//	  "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}
func writeGoogleError(w http.ResponseWriter, status int, grpcStatus, message, fcmCode string) {
	e := map[string]any{"code": status, "message": message, "status": grpcStatus}
	if fcmCode != "" {
		e["details"] = []map[string]string{{"@type": fcmErrorType, "errorCode": fcmCode}}
	}
	w.Header().Set("Content-Type", googleJSONHeader)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}

func writeOAuthError(w http.ResponseWriter, code, description string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", googleJSONHeader)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// validFCMToken accepts what could be a registration token: printable, no spaces.
func validFCMToken(t string) bool {
	if len(t) > 4096 {
		return false
	}
	for _, r := range t {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// fcmDelivery records what a device would get from an FCM message.
func fcmDelivery(m *messaging.Message, id string, size int, now time.Time) Delivery {
	d := Delivery{
		Platform:     PlatformFCM,
		Token:        m.Token,
		MessageID:    id,
		Data:         m.Data,
		PayloadBytes: size,
		Time:         now,
	}
	if n := m.Notification; n != nil {
		d.Title, d.Body = n.Title, n.Body
	}
	if a := m.Android; a != nil {
		d.CollapseKey, d.Priority = a.CollapseKey, a.Priority
		if a.TTL != nil {
			d.TTL = strconv.FormatFloat(a.TTL.Seconds(), 'f', -1, 64) + "s"
		}
		if a.Data != nil {
			d.Data = a.Data
		}
		if n := a.Notification; n != nil {
			d.Tag, d.Sound, d.Badge = n.Tag, n.Sound, n.NotificationCount
			d.TitleLocKey, d.TitleLocArgs, d.BodyLocKey, d.BodyLocArgs = n.TitleLocKey, n.TitleLocArgs, n.BodyLocKey, n.BodyLocArgs
			if n.Title != "" {
				d.Title = n.Title
			}
			if n.Body != "" {
				d.Body = n.Body
			}
		}
	}
	if a := m.APNS; a != nil {
		if d.CollapseKey == "" {
			d.CollapseKey = a.Headers["apns-collapse-id"]
		}
		d.PushType = a.Headers["apns-push-type"]
		if p := a.Payload; p != nil && p.Aps != nil {
			d.ThreadID = p.Aps.ThreadID
			if d.Badge == nil {
				d.Badge = p.Aps.Badge
			}
			d.Sound = cmp.Or(d.Sound, p.Aps.Sound)
			d.MutableContent = p.Aps.MutableContent
			if al := p.Aps.Alert; al != nil && d.TitleLocKey == "" && d.BodyLocKey == "" {
				d.TitleLocKey, d.TitleLocArgs, d.BodyLocKey, d.BodyLocArgs = al.TitleLocKey, al.TitleLocArgs, al.LocKey, al.LocArgs
			}
		}
	}
	return d
}

// delay waits for the configured latency; it returns false when the client went away.
func (s *Server) delay(r *http.Request) bool {
	s.mu.Lock()
	d := s.faults.latency
	s.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// redact shortens a device token for logs.
func redact(token string) string {
	n := min(6, len(token)/2)
	return strings.ToValidUTF8(token[:n], "") + "…(" + strconv.Itoa(len(token)) + ")"
}
