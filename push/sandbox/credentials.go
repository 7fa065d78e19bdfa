package sandbox

// The sandbox's credentials, written for the worker (files and flags),
// and rotated on request.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nudgehq/nudge/internal/flagenv"
)

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
