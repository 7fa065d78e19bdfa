// Package sandbox is a local push provider for tests and the demo. It speaks the real wire
// protocols, so the real client libraries talk to it unchanged:
//
//   - FCM HTTP v1 over plain HTTP: POST /v1/projects/{project}/messages:send, authorised by an
//     OAuth2 access token that its own token endpoint (POST /token, the token_uri of the
//     service account it generates) issues for a JWT-bearer assertion signed by that service
//     account's key. Errors use FCM's JSON error format, so firebase-admin-go's error helpers
//     classify them as they would Google's.
//   - APNs over HTTP/2 and TLS (a CA and server certificate generated at start):
//     POST /3/device/{token}, authorised by an ES256 provider token signed with the .p8 key it
//     generates. Errors use APNs' JSON {"reason": ...} bodies and status codes.
//
// Every accepted notification is recorded as a Delivery. Faults can be injected per device
// token (unregistered, bad token, rate limited with Retry-After, server error; for the next N
// requests or always), as a seeded random mix (Chaos), and as latency. A control HTTP API under
// /sandbox/ on the FCM listener exposes the same to other processes; README.md documents it.
package sandbox

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nudgehq/nudge/event"
)

// Platform names, the values of Delivery.Platform and Fault.Platform: the
// event contract's (event.PlatformFCM, event.PlatformAPNs).
const (
	PlatformFCM  = event.PlatformFCM
	PlatformAPNs = event.PlatformAPNs
)

// maxPayloadBytes is the payload limit the sandbox enforces, like both providers.
const maxPayloadBytes = 4096

// Config configures a sandbox. The zero value of every field means its default.
type Config struct {
	// FCMAddr is the listen address of the FCM, OAuth2 token and control endpoints (plain
	// HTTP). Default "127.0.0.1:0", a free port.
	FCMAddr string
	// APNsAddr is the listen address of the APNs endpoint (HTTP/2 over TLS). Default
	// "127.0.0.1:0".
	APNsAddr string
	// ProjectID is the Firebase project id of the generated service account; sends to any
	// other project are refused. Default "nudge-sandbox".
	ProjectID string
	// APNsTopic is the only bundle id APNs requests may name in apns-topic. Default
	// "com.nudgehq.app".
	APNsTopic string
	// APNsTeamID is the team id provider tokens must be issued by. Default: random.
	APNsTeamID string
	// Apps are the apps the sandbox serves, each with its own Firebase project and service
	// account, and its own APNs key, team and topics: a push authenticated by one app's
	// credentials is refused for another app's project or topic, and every Delivery records
	// the app whose credentials sent it. Default: one app, DefaultAppName, made of ProjectID,
	// APNsTopic and APNsTeamID.
	Apps []AppConfig
	// Chaos is the initial random failure mix. Default: none.
	Chaos Chaos
	// Latency delays every send request. Default 0.
	Latency time.Duration
	// MaxDeliveries bounds the recorded deliveries; the oldest are dropped. Default 100000.
	MaxDeliveries int
	// Logger receives a debug line per request. Default: discard.
	Logger *slog.Logger
	// Now is the clock for token expiry and delivery times. Default time.Now.
	Now func() time.Time
}

// AppConfig is one app of the sandbox.
type AppConfig struct {
	// Name names the app in Delivery.App and in the written credentials.
	Name string
	// ProjectID is the app's Firebase project. Default "<name>-sandbox".
	ProjectID string
	// APNsTopics are the bundle ids the app's key may push to. Default "com.nudgehq.<name>".
	APNsTopics []string
	// APNsTeamID is the app's team. Default: random.
	APNsTeamID string
	// APNsKeyID is the id of the app's APNs key (the key itself is always generated).
	// Default: random. A fixed id lets a static apps file name it.
	APNsKeyID string
}

// DefaultAppName is the name of the app of a Config without Apps.
const DefaultAppName = "default"

// app is one app of a running sandbox.
type app struct {
	cfg   AppConfig
	creds credentials
}

// Server is a running sandbox. Its methods are safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger

	fcmURL, apnsURL string
	fcmSrv, apnsSrv *http.Server
	caPEM           []byte
	pool            *x509.CertPool
	stopAfter       func() bool
	closeOnce       sync.Once
	closeErr        error
	serving         sync.WaitGroup

	mu       sync.Mutex
	apps     []*app // apps[0] is the one Credentials returns
	faults   faultState
	rec      recorder
	inFlight map[string]int // send requests being handled, per platform; never reset
}

// Start generates credentials and certificates, binds both listeners and serves until Close
// or until ctx is done.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.faults = newFaultState(cfg.Chaos, cfg.Latency)
	s.rec = newRecorder(cfg.MaxDeliveries)
	s.inFlight = make(map[string]int)

	ca, err := newCA()
	if err != nil {
		return nil, err
	}
	serverCert, err := ca.issueServerCert()
	if err != nil {
		return nil, err
	}
	s.caPEM, s.pool = ca.pem, ca.pool

	var lc net.ListenConfig
	fcmLn, err := lc.Listen(ctx, "tcp", cfg.FCMAddr)
	if err != nil {
		return nil, fmt.Errorf("sandbox: listen fcm: %w", err)
	}
	apnsLn, err := lc.Listen(ctx, "tcp", cfg.APNsAddr)
	if err != nil {
		fcmLn.Close()
		return nil, fmt.Errorf("sandbox: listen apns: %w", err)
	}
	s.fcmURL = "http://" + fcmLn.Addr().String()
	s.apnsURL = "https://" + apnsLn.Addr().String()

	for _, ac := range cfg.Apps {
		creds, err := newCredentials(ac.ProjectID, s.fcmURL+"/token")
		if err != nil {
			fcmLn.Close()
			apnsLn.Close()
			return nil, err
		}
		if ac.APNsKeyID != "" {
			creds.apnsKeyID = ac.APNsKeyID
		}
		s.apps = append(s.apps, &app{cfg: ac, creds: creds})
	}

	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.fcmSrv = &http.Server{
		Handler:           s.fcmHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
		ConnState:         s.countConn(PlatformFCM),
	}
	h2 := new(http.Protocols)
	h2.SetHTTP2(true) // APNs is HTTP/2 only; ALPN offers nothing else
	s.apnsSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveAPNs),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
		Protocols:         h2,
		TLSConfig:         serverCert,
		ConnState:         s.countConn(PlatformAPNs),
	}
	s.serving.Go(func() { s.serve(s.fcmSrv.Serve(fcmLn), "fcm") })
	s.serving.Go(func() { s.serve(s.apnsSrv.ServeTLS(apnsLn, "", ""), "apns") })
	// The callback may run before AfterFunc returns: it must not read s.stopAfter.
	s.stopAfter = context.AfterFunc(ctx, func() { _ = s.shutdown() })

	s.log.Info("push sandbox listening",
		slog.String("fcm_endpoint", s.FCMEndpoint()),
		slog.String("apns_host", s.apnsURL),
		slog.String("control_url", s.ControlURL()))
	return s, nil
}

func (s *Server) serve(err error, name string) {
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("push sandbox listener stopped", slog.String("listener", name), slog.String("err", err.Error()))
	}
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.FCMAddr == "" {
		cfg.FCMAddr = "127.0.0.1:0"
	}
	if cfg.APNsAddr == "" {
		cfg.APNsAddr = "127.0.0.1:0"
	}
	if cfg.ProjectID == "" {
		cfg.ProjectID = "nudge-sandbox"
	}
	if cfg.APNsTopic == "" {
		cfg.APNsTopic = "com.nudgehq.app"
	}
	if cfg.APNsTeamID == "" {
		cfg.APNsTeamID = randomID(10)
	}
	if len(cfg.Apps) == 0 {
		cfg.Apps = []AppConfig{{Name: DefaultAppName, ProjectID: cfg.ProjectID, APNsTopics: []string{cfg.APNsTopic}, APNsTeamID: cfg.APNsTeamID}}
	}
	projects, topics, names := map[string]bool{}, map[string]bool{}, map[string]bool{}
	apps := make([]AppConfig, len(cfg.Apps))
	for i, a := range cfg.Apps {
		if a.Name == "" || names[a.Name] {
			return cfg, fmt.Errorf("sandbox: app %d: empty or repeated name %q", i, a.Name)
		}
		if a.ProjectID == "" {
			a.ProjectID = a.Name + "-sandbox"
		}
		if len(a.APNsTopics) == 0 {
			a.APNsTopics = []string{"com.nudgehq." + a.Name}
		}
		if a.APNsTeamID == "" {
			a.APNsTeamID = randomID(10)
		}
		if projects[a.ProjectID] {
			return cfg, fmt.Errorf("sandbox: app %s: project %s is another app's", a.Name, a.ProjectID)
		}
		for _, t := range a.APNsTopics {
			if topics[t] {
				return cfg, fmt.Errorf("sandbox: app %s: topic %s is another app's", a.Name, t)
			}
			topics[t] = true
		}
		names[a.Name], projects[a.ProjectID] = true, true
		apps[i] = a
	}
	cfg.Apps = apps
	if cfg.MaxDeliveries < 0 || cfg.Latency < 0 {
		return cfg, errors.New("sandbox: negative MaxDeliveries or Latency")
	}
	cfg.MaxDeliveries = cmp.Or(cfg.MaxDeliveries, 100_000)
	if err := cfg.Chaos.validate(); err != nil {
		return cfg, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

// Close stops both listeners and closes every connection. It is idempotent.
func (s *Server) Close() error {
	s.stopAfter()
	return s.shutdown()
}

func (s *Server) shutdown() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.fcmSrv.Close(), s.apnsSrv.Close())
		s.serving.Wait()
	})
	return s.closeErr
}

// FCMEndpoint returns the FCM HTTP v1 base URL, for push.FCMConfig.Endpoint.
func (s *Server) FCMEndpoint() string { return s.fcmURL + "/v1" }

// APNsHost returns the APNs base URL, for push.APNsConfig.Host.
func (s *Server) APNsHost() string { return s.apnsURL }

// ControlURL returns the base URL of the control API.
func (s *Server) ControlURL() string { return s.fcmURL + "/sandbox" }

// CertPool returns a pool holding the CA of the APNs server certificate.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// CACertPEM returns that CA certificate in PEM.
func (s *Server) CACertPEM() []byte { return bytes.Clone(s.caPEM) }

// Files written by WriteCredentials.
const (
	ServiceAccountFile = "service-account.json"
	APNsKeyFile        = "apns-key.p8"
	CACertFile         = "apns-ca.pem"
	EnvFile            = "sandbox.env"
	// AppsFile is an apps file (package apps) naming every app of the sandbox with its
	// credentials, for the worker's -apps-file. The first app's credential files are the ones
	// above; another app's are under apps/<name>/.
	AppsFile = "apps.yaml"
)
