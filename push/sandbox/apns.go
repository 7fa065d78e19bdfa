package sandbox

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// providerTokenTTL is how long APNs accepts a provider token after its iat.
const providerTokenTTL = time.Hour

// APNs reasons the sandbox answers with (Apple's documented values, except badPayload).
const (
	reasonBadCollapseID          = "BadCollapseId"
	reasonBadDeviceToken         = "BadDeviceToken"
	reasonBadExpirationDate      = "BadExpirationDate"
	reasonBadMessageID           = "BadMessageId"
	reasonBadPath                = "BadPath"
	reasonBadPriority            = "BadPriority"
	reasonDeviceTokenNotForTopic = "DeviceTokenNotForTopic"
	reasonExpiredProviderToken   = "ExpiredProviderToken"
	reasonInternalServerError    = "InternalServerError"
	reasonInvalidProviderToken   = "InvalidProviderToken"
	reasonInvalidPushType        = "InvalidPushType"
	reasonMethodNotAllowed       = "MethodNotAllowed"
	reasonMissingDeviceToken     = "MissingDeviceToken"
	reasonMissingProviderToken   = "MissingProviderToken"
	reasonMissingTopic           = "MissingTopic"
	reasonTopicDisallowed        = "TopicDisallowed"
	reasonPayloadEmpty           = "PayloadEmpty"
	reasonPayloadTooLarge        = "PayloadTooLarge"
	reasonServiceUnavailable     = "ServiceUnavailable"
	reasonTooManyRequests        = "TooManyRequests"
	reasonUnregistered           = "Unregistered"
	// badPayload answers a body that is not a JSON object with "aps"; Apple documents no
	// reason for it.
	badPayload = "BadPayload"
)

var (
	uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	pushTypes   = map[string]bool{
		"alert": true, "background": true, "location": true, "voip": true, "complication": true,
		"fileprovider": true, "mdm": true, "liveactivity": true, "pushtotalk": true, "widgets": true,
		"controls": true,
	}
)

// serveAPNs answers POST /3/device/{token} as APNs does.
func (s *Server) serveAPNs(w http.ResponseWriter, r *http.Request) {
	defer s.countRequest(PlatformAPNs)()
	id := r.Header.Get("apns-id")
	if id == "" {
		id = newUUID()
	} else if !uuidPattern.MatchString(id) {
		s.apnsError(w, http.StatusBadRequest, reasonBadMessageID, newUUID())
		return
	}
	if !s.delay(r) {
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || strings.Contains(token, "/") {
		s.apnsError(w, http.StatusNotFound, reasonBadPath, id)
		return
	}
	if r.Method != http.MethodPost {
		s.apnsError(w, http.StatusMethodNotAllowed, reasonMethodNotAllowed, id)
		return
	}
	sender, reason := s.apnsAuthError(r)
	if reason != "" {
		s.apnsError(w, http.StatusForbidden, reason, id)
		return
	}
	if reason := s.apnsHeaderError(r, token, sender); reason != "" {
		s.apnsError(w, http.StatusBadRequest, reason, id)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayloadBytes+1))
	switch {
	case err != nil:
		return // the client went away
	case len(bytes.TrimSpace(body)) == 0:
		s.apnsError(w, http.StatusBadRequest, reasonPayloadEmpty, id)
		return
	case len(body) > maxPayloadBytes:
		s.apnsError(w, http.StatusRequestEntityTooLarge, reasonPayloadTooLarge, id)
		return
	}
	d, ok := apnsDelivery(body)
	if !ok {
		s.apnsError(w, http.StatusBadRequest, badPayload, id)
		return
	}

	s.mu.Lock()
	fault := s.faults.decide(PlatformAPNs, token)
	s.mu.Unlock()
	if fault != nil && fault.kind != FaultLostAnswer {
		s.apnsFault(w, fault, id)
		return
	}
	d.Token, d.MessageID, d.Time, d.App = token, id, s.cfg.Now(), sender.cfg.Name
	d.Topic = r.Header.Get("apns-topic")
	d.CollapseKey = r.Header.Get("apns-collapse-id")
	d.PushType = r.Header.Get("apns-push-type")
	d.Priority = r.Header.Get("apns-priority")
	d.TTL = r.Header.Get("apns-expiration")
	s.record(d)
	s.log.Debug("sandbox apns delivered", slog.String("token", redact(token)))
	if fault != nil {
		loseAnswer(r, fault)
	}
	w.Header().Set("apns-id", id)
	w.WriteHeader(http.StatusOK)
}

// apnsAuthError checks the provider token: an ES256 JWT with the current key id of an app,
// issued by that app's team, signed by its current key, at most an hour old. It returns the
// app, or the APNs reason of a rejection.
func (s *Server) apnsAuthError(r *http.Request) (*app, string) {
	auth := r.Header.Get("authorization")
	if auth == "" {
		return nil, reasonMissingProviderToken
	}
	scheme, raw, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return nil, reasonInvalidProviderToken
	}
	t, err := parseJWT(raw)
	if err != nil {
		return nil, reasonInvalidProviderToken
	}
	var signer *app
	s.mu.Lock()
	for _, a := range s.apps {
		if t.header.Kid == a.creds.apnsKeyID {
			signer = a
		}
	}
	var creds credentials
	if signer != nil {
		creds = signer.creds
	}
	s.mu.Unlock()
	if signer == nil || t.claims.Iss != signer.cfg.APNsTeamID || t.verifyES256(&creds.apnsKey.PublicKey) != nil || t.claims.Iat == 0 {
		return nil, reasonInvalidProviderToken
	}
	now, iat := s.cfg.Now(), time.Unix(t.claims.Iat, 0)
	switch {
	case iat.After(now.Add(maxClockSkew)):
		return nil, reasonInvalidProviderToken
	case now.Sub(iat) > providerTokenTTL:
		return nil, reasonExpiredProviderToken
	}
	return signer, ""
}

// apnsHeaderError validates the device token and the apns-* headers, returning the APNs
// reason of the first problem, or "".
func (s *Server) apnsHeaderError(r *http.Request, token string, sender *app) string {
	if token == "" {
		return reasonMissingDeviceToken
	}
	if _, err := hex.DecodeString(token); err != nil || len(token) < 32 {
		return reasonBadDeviceToken
	}
	switch topic := r.Header.Get("apns-topic"); {
	case topic == "":
		return reasonMissingTopic
	case !slices.Contains(sender.cfg.APNsTopics, topic):
		if s.topicOfAnotherApp(topic) {
			// Another app's bundle id, of another team: this key may not push to it.
			return reasonTopicDisallowed
		}
		return reasonDeviceTokenNotForTopic
	}
	if pt := r.Header.Get("apns-push-type"); pt != "" && !pushTypes[pt] {
		return reasonInvalidPushType
	}
	switch r.Header.Get("apns-priority") {
	case "", "1", "5", "10":
	default:
		return reasonBadPriority
	}
	if len(r.Header.Get("apns-collapse-id")) > 64 {
		return reasonBadCollapseID
	}
	if exp := r.Header.Get("apns-expiration"); exp != "" {
		if _, err := strconv.ParseInt(exp, 10, 64); err != nil {
			return reasonBadExpirationDate
		}
	}
	return ""
}

// topicOfAnotherApp reports whether topic is a bundle id of one of the sandbox's apps.
func (s *Server) topicOfAnotherApp(topic string) bool {
	for _, a := range s.cfg.Apps {
		if slices.Contains(a.APNsTopics, topic) {
			return true
		}
	}
	return false
}

// apnsFault answers a request the fault engine chose to fail, as APNs would.
func (s *Server) apnsFault(w http.ResponseWriter, d *decision, id string) {
	if d.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(d.retryAfter))
	}
	switch d.kind {
	case FaultUnregistered:
		s.apnsError(w, http.StatusGone, reasonUnregistered, id)
	case FaultBadToken:
		s.apnsError(w, http.StatusBadRequest, reasonBadDeviceToken, id)
	case FaultWrongSender:
		s.apnsError(w, http.StatusBadRequest, reasonDeviceTokenNotForTopic, id)
	case FaultRateLimited:
		s.apnsError(w, http.StatusTooManyRequests, reasonTooManyRequests, id)
	case FaultServerError:
		if d.status == http.StatusInternalServerError {
			s.apnsError(w, http.StatusInternalServerError, reasonInternalServerError, id)
		} else {
			s.apnsError(w, http.StatusServiceUnavailable, reasonServiceUnavailable, id)
		}
	}
}

// apnsError writes an APNs error: {"reason": ...}, with "timestamp" (milliseconds) for 410.
func (s *Server) apnsError(w http.ResponseWriter, status int, reason, id string) {
	s.countError(PlatformAPNs, reason)
	body := map[string]any{"reason": reason}
	if status == http.StatusGone {
		body["timestamp"] = s.cfg.Now().UnixMilli()
	}
	w.Header().Set("apns-id", id)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// apnsDelivery reads the fields a device would show from an APNs payload; ok is false when
// body is not a JSON object with an "aps" object.
func apnsDelivery(body []byte) (d Delivery, ok bool) {
	var root map[string]json.RawMessage
	if json.Unmarshal(body, &root) != nil || root["aps"] == nil {
		return d, false
	}
	var aps struct {
		Alert          json.RawMessage `json:"alert"`
		Badge          *int            `json:"badge"`
		Sound          json.RawMessage `json:"sound"`
		ThreadID       string          `json:"thread-id"`
		MutableContent int             `json:"mutable-content"`
	}
	if json.Unmarshal(root["aps"], &aps) != nil {
		return d, false
	}
	d.Platform, d.PayloadBytes = PlatformAPNs, len(body)
	d.Badge, d.ThreadID, d.MutableContent = aps.Badge, aps.ThreadID, aps.MutableContent == 1
	var alert struct {
		Title        string   `json:"title"`
		Body         string   `json:"body"`
		TitleLocKey  string   `json:"title-loc-key"`
		TitleLocArgs []string `json:"title-loc-args"`
		LocKey       string   `json:"loc-key"`
		LocArgs      []string `json:"loc-args"`
	}
	if json.Unmarshal(aps.Alert, &d.Body) != nil {
		_ = json.Unmarshal(aps.Alert, &alert)
		d.Title, d.Body = alert.Title, alert.Body
		d.TitleLocKey, d.TitleLocArgs, d.BodyLocKey, d.BodyLocArgs = alert.TitleLocKey, alert.TitleLocArgs, alert.LocKey, alert.LocArgs
	}
	var sound struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(aps.Sound, &d.Sound) != nil {
		_ = json.Unmarshal(aps.Sound, &sound)
		d.Sound = sound.Name
	}
	for k, v := range root {
		if k == "aps" {
			continue
		}
		if d.Data == nil {
			d.Data = make(map[string]string, len(root)-1)
		}
		var str string
		if json.Unmarshal(v, &str) == nil {
			d.Data[k] = str
		} else {
			d.Data[k] = string(v)
		}
	}
	return d, true
}

// newUUID returns a random (version 4) UUID in canonical form, as apns-id.
func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
