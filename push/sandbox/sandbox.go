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
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/flagenv"
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

// credentials are the provider keys clients must use; RotateCredentials replaces them.
type credentials struct {
	saKey     *rsa.PrivateKey
	saKeyID   string
	saEmail   string
	saJSON    []byte
	apnsKey   *ecdsa.PrivateKey
	apnsKeyID string
	apnsP8    []byte
	// accessTokens maps the OAuth2 access tokens issued for the current service-account key
	// to their expiry.
	accessTokens map[string]time.Time
}

// Credentials is everything a client needs to reach the sandbox.
type Credentials struct {
	// ProjectID is the Firebase project id.
	ProjectID string `json:"project_id"`
	// FCMEndpoint is the FCM HTTP v1 base URL, "/v1" included (push.FCMConfig.Endpoint).
	FCMEndpoint string `json:"fcm_endpoint"`
	// ServiceAccountJSON is a service-account key whose token_uri is the sandbox.
	ServiceAccountJSON []byte `json:"-"`
	// APNsHost is the APNs base URL, https://127.0.0.1:port (push.APNsConfig.Host).
	APNsHost string `json:"apns_host"`
	// APNsKeyP8 is the PKCS#8 PEM of the EC P-256 key provider tokens must be signed with.
	APNsKeyP8  []byte `json:"-"`
	APNsKeyID  string `json:"apns_key_id"`
	APNsTeamID string `json:"apns_team_id"`
	APNsTopic  string `json:"apns_topic"`
	// CACertPEM is the CA that signed the APNs server certificate; CertPool holds it.
	CACertPEM []byte         `json:"-"`
	CertPool  *x509.CertPool `json:"-"`
	// ControlURL is the base URL of the control API, ending in "/sandbox".
	ControlURL string `json:"control_url"`
	// App is the app these credentials are of; APNsTopics all its topics (APNsTopic is
	// the first).
	App        string   `json:"app"`
	APNsTopics []string `json:"apns_topics"`
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
	}
	h2 := new(http.Protocols)
	h2.SetHTTP2(true) // APNs is HTTP/2 only; ALPN offers nothing else
	s.apnsSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveAPNs),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
		Protocols:         h2,
		TLSConfig:         serverCert,
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

// Credentials returns the current credentials and endpoints of the first app.
func (s *Server) Credentials() Credentials {
	c, _ := s.AppCredentials(s.cfg.Apps[0].Name)
	return c
}

// AppCredentials returns the current credentials and endpoints of an app; ok is false for an
// app the sandbox does not serve.
func (s *Server) AppCredentials(name string) (c Credentials, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.apps {
		if a.cfg.Name != name {
			continue
		}
		return Credentials{
			App:                a.cfg.Name,
			ProjectID:          a.cfg.ProjectID,
			FCMEndpoint:        s.FCMEndpoint(),
			ServiceAccountJSON: bytes.Clone(a.creds.saJSON),
			APNsHost:           s.apnsURL,
			APNsKeyP8:          bytes.Clone(a.creds.apnsP8),
			APNsKeyID:          a.creds.apnsKeyID,
			APNsTeamID:         a.cfg.APNsTeamID,
			APNsTopic:          a.cfg.APNsTopics[0],
			APNsTopics:         slices.Clone(a.cfg.APNsTopics),
			CACertPEM:          bytes.Clone(s.caPEM),
			CertPool:           s.pool,
			ControlURL:         s.ControlURL(),
		}, true
	}
	return Credentials{}, false
}

// Apps returns the names of the apps the sandbox serves, the first app first.
func (s *Server) Apps() []string {
	out := make([]string, len(s.cfg.Apps))
	for i, a := range s.cfg.Apps {
		out[i] = a.Name
	}
	return out
}

// RotateCredentials replaces every app's service-account key and APNs key (with a new key
// id). From then on the old keys are rejected, and so are access tokens issued for the old
// service-account keys. Written credential files are not updated; call WriteCredentials.
func (s *Server) RotateCredentials() error {
	fresh := make([]credentials, len(s.cfg.Apps))
	for i, a := range s.cfg.Apps {
		creds, err := newCredentials(a.ProjectID, s.fcmURL+"/token")
		if err != nil {
			return err
		}
		fresh[i] = creds
	}
	s.mu.Lock()
	for i := range s.apps {
		s.apps[i].creds = fresh[i]
	}
	s.mu.Unlock()
	return nil
}

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

// workerSettings are the worker's settings (flag name, value) that send
// its pushes to the sandbox's first app, with the credential files in dir.
func (s *Server) workerSettings(dir string) [][2]string {
	c := s.Credentials()
	return [][2]string{
		{"fcm-project-id", c.ProjectID},
		{"fcm-endpoint", c.FCMEndpoint},
		{"fcm-credentials-file", filepath.Join(dir, ServiceAccountFile)},
		{"apns-host", c.APNsHost},
		{"apns-key-file", filepath.Join(dir, APNsKeyFile)},
		{"apns-key-id", c.APNsKeyID},
		{"apns-team-id", c.APNsTeamID},
		{"apns-topic", c.APNsTopic},
		{"apns-ca-file", filepath.Join(dir, CACertFile)},
	}
}

// WorkerArgs returns the worker's flags that send its pushes to the
// sandbox's first app ("-fcm-endpoint", url, ...), with the credential
// files WriteCredentials wrote to dir. sandbox.env holds the same as
// NUDGE_* variables.
func (s *Server) WorkerArgs(dir string) []string {
	var args []string
	for _, kv := range s.workerSettings(dir) {
		args = append(args, "-"+kv[0], kv[1])
	}
	return args
}

// WriteCredentials writes the credentials to dir, for other processes: service-account.json,
// apns-key.p8, apns-ca.pem, apps.yaml (every app, see AppsFile) and sandbox.env, a KEY=value
// file naming the rest (see README.md). Each file is replaced atomically and sandbox.env is
// written last, so its presence means the set is complete.
func (s *Server) WriteCredentials(dir string) error {
	c := s.Credentials()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sandbox: credentials dir: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("sandbox: credentials dir: %w", err)
	}
	var lines []string
	for _, kv := range s.workerSettings(abs) {
		lines = append(lines, flagenv.EnvName(kv[0])+"="+kv[1])
	}
	env := strings.Join(append(lines, "NUDGE_PUSH_SANDBOX_CONTROL_URL="+c.ControlURL), "\n") + "\n"
	type file struct {
		name string
		data []byte
		perm os.FileMode
	}
	files := []file{
		{ServiceAccountFile, c.ServiceAccountJSON, 0o600},
		{APNsKeyFile, c.APNsKeyP8, 0o600},
		{CACertFile, c.CACertPEM, 0o644},
	}
	var apps strings.Builder
	apps.WriteString("# Written by the push sandbox: its apps and their credentials (paths relative to this file).\napps:\n")
	for i, name := range s.Apps() {
		ac, _ := s.AppCredentials(name)
		sa, key := ServiceAccountFile, APNsKeyFile
		if i > 0 {
			sa, key = filepath.Join("apps", name, ServiceAccountFile), filepath.Join("apps", name, APNsKeyFile)
			if err := os.MkdirAll(filepath.Join(abs, "apps", name), 0o700); err != nil {
				return fmt.Errorf("sandbox: credentials dir: %w", err)
			}
			files = append(files, file{sa, ac.ServiceAccountJSON, 0o600}, file{key, ac.APNsKeyP8, 0o600})
		}
		topics := make([]string, len(ac.APNsTopics))
		for j, t := range ac.APNsTopics {
			topics[j] = strconv.Quote(t)
		}
		fmt.Fprintf(&apps, "  %s:\n    fcm:\n      credentials_file: %q\n      project_id: %q\n      endpoint: %q\n"+
			"    apns:\n      key_file: %q\n      key_id: %q\n      team_id: %q\n      topics: [%s]\n      host: %q\n      ca_file: %q\n",
			name, sa, ac.ProjectID, ac.FCMEndpoint, key, ac.APNsKeyID, ac.APNsTeamID, strings.Join(topics, ", "), ac.APNsHost, CACertFile)
	}
	files = append(files, file{AppsFile, []byte(apps.String()), 0o644}, file{EnvFile, []byte(env), 0o644})
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(abs, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("sandbox: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	_, err = tmp.Write(data)
	err = errors.Join(err, tmp.Chmod(perm), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("sandbox: write %s: %w", path, err)
	}
	return nil
}
