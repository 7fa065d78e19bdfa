// Package apps reads the apps file: each app (or tenant) of one deployment
// with its own push credentials (a Firebase project, an APNs key and its
// bundle ids) and the way its reminders are written (default locale,
// previews, localization on the server or the device, templates). A
// device's app picks its sender and its text.
//
// The file is YAML (JSON is YAML too); see docs/apps.md for every field and
// a full example. Relative paths in it are relative to the file. Live keeps
// the current apps and reloads them on SIGHUP or when the file changes; a
// file that does not load or whose credentials do not work is refused with
// a log line naming the problem, and the apps loaded before stay in use.
package apps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/nudgehq/nudge/content"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/push"
)

// File is the apps file.
type File struct {
	Apps map[string]Config `yaml:"apps"`
}

// Config is one app of the file.
type Config struct {
	FCM  *FCMConfig  `yaml:"fcm"`
	APNs *APNsConfig `yaml:"apns"`
	// Locale is the app's default locale (BCP 47): the language of a
	// device whose own locale has no strings. Default en.
	Locale string `yaml:"locale"`
	// Previews: show (default), sender or hidden.
	Previews string `yaml:"previews"`
	// Localize: server (default) or device (localization keys too).
	Localize string `yaml:"localize"`
	// MutableContent sets APNs mutable-content, for apps whose
	// notification service extension rewrites the push (decrypts it, say).
	MutableContent bool `yaml:"mutable_content"`
	// Templates override built-in strings: locale -> string id -> text or
	// plural forms.
	Templates content.Templates `yaml:"templates"`
}

// FCMConfig is an app's Firebase Cloud Messaging sender.
type FCMConfig struct {
	CredentialsFile string `yaml:"credentials_file"`
	ProjectID       string `yaml:"project_id"`
	Endpoint        string `yaml:"endpoint"`
}

// APNsConfig is an app's APNs sender: one .p8 key for every bundle id of
// the app (an Apple key serves every app of its team).
type APNsConfig struct {
	KeyFile string   `yaml:"key_file"`
	KeyID   string   `yaml:"key_id"`
	TeamID  string   `yaml:"team_id"`
	Topics  []string `yaml:"topics"`
	// Host: production (default), sandbox (development builds), or an
	// https:// URL (the push sandbox's).
	Host   string `yaml:"host"`
	CAFile string `yaml:"ca_file"`
}

// APNs hosts by name.
const (
	HostProduction = "https://api.push.apple.com"
	HostSandbox    = "https://api.sandbox.push.apple.com"
)

// maxFileBytes bounds the apps file.
const maxFileBytes = 4 << 20

// Load reads and checks an apps file.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("apps file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("apps file: %w", err)
	}
	if len(raw) > maxFileBytes {
		return nil, fmt.Errorf("apps file %s: over %d bytes", path, maxFileBytes)
	}
	file, err := Parse(raw, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("apps file %s: %w", path, err)
	}
	return file, nil
}

// Parse reads an apps file's bytes; dir resolves its relative paths. An
// unknown field is an error (a misspelt setting never passes silently).
func Parse(raw []byte, dir string) (*File, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty")
		}
		return nil, err
	}
	if len(f.Apps) == 0 {
		return nil, errors.New(`no apps: want "apps:" with at least one app`)
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for _, name := range f.Names() {
		c := f.Apps[name]
		if err := event.CheckApp(name); err != nil {
			return nil, fmt.Errorf("app %q: %w", name, err)
		}
		if c.FCM == nil && c.APNs == nil {
			return nil, fmt.Errorf("app %s: no fcm and no apns: give it at least one", name)
		}
		if c.FCM != nil {
			if c.FCM.CredentialsFile == "" {
				return nil, fmt.Errorf("app %s: fcm: credentials_file is required", name)
			}
			c.FCM.CredentialsFile = abs(c.FCM.CredentialsFile)
		}
		if a := c.APNs; a != nil {
			switch {
			case a.KeyFile == "" || a.KeyID == "" || a.TeamID == "":
				return nil, fmt.Errorf("app %s: apns: key_file, key_id and team_id are required", name)
			case len(a.Topics) == 0:
				return nil, fmt.Errorf("app %s: apns: topics: give the app's bundle id", name)
			}
			for _, t := range a.Topics {
				if !validTopic(t) {
					return nil, fmt.Errorf("app %s: apns: topic %q is not a bundle id", name, t)
				}
			}
			a.KeyFile, a.CAFile = abs(a.KeyFile), abs(a.CAFile)
			switch a.Host {
			case "", "production":
				a.Host = HostProduction
			case "sandbox", "development":
				a.Host = HostSandbox
			default:
				if !strings.HasPrefix(a.Host, "https://") {
					return nil, fmt.Errorf("app %s: apns: host %q: want production, sandbox or an https:// URL", name, a.Host)
				}
			}
		}
		if err := content.CheckStyle(c.style()); err != nil {
			return nil, fmt.Errorf("app %s: %w", name, err)
		}
		f.Apps[name] = c
	}
	return &f, nil
}

// Names returns the apps of the file, sorted.
func (f *File) Names() []string { return slices.Sorted(maps.Keys(f.Apps)) }

func (c Config) style() content.Style {
	return content.Style{DefaultLocale: c.Locale, Previews: c.Previews, Localize: c.Localize}
}

// validTopic reports whether t looks like a bundle id: letters, digits,
// "-" and ".", plus the suffixes APNs topics may carry (".voip").
func validTopic(t string) bool {
	if t == "" || len(t) > 255 {
		return false
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// App is one app ready to push.
type App struct {
	Name string
	// FCM and APNs send the app's pushes; nil when the app has none.
	FCM, APNs push.Sender
	// Topics are the app's APNs bundle ids; a device names one, or gets
	// the first.
	Topics []string
	// Style is how the app's reminders are written (a user's previews
	// setting may hide more).
	Style content.Style
	// MutableContent marks APNs pushes mutable-content.
	MutableContent bool
}

// Sender returns the app's sender for a platform, nil if it has none.
func (a *App) Sender(platform string) push.Sender {
	switch platform {
	case push.PlatformFCM:
		return a.FCM
	case push.PlatformAPNs:
		return a.APNs
	}
	return nil
}

// Topic returns the APNs topic to push a device with: the device's own if
// the app has it, the app's first for a device that names none; ok is
// false for a topic the app does not list.
func (a *App) Topic(device string) (string, bool) {
	if device == "" {
		if len(a.Topics) == 0 {
			return "", true // the sender's own
		}
		return a.Topics[0], true
	}
	if len(a.Topics) == 0 || slices.Contains(a.Topics, device) {
		return device, true
	}
	return "", false
}

// Set is the apps of one load, immutable once built.
type Set struct {
	apps map[string]*App
	// fallback serves apps not in the file: every app when there is no
	// file (single-app settings), the default app when there is.
	fallback     *App
	fallbackOnly string // with a file: the one app the fallback serves
	catalog      *content.Catalog
	senders      []push.Sender
}

// App returns the app of a device; nil for an app with no credentials.
func (s *Set) App(name string) *App {
	if a, ok := s.apps[name]; ok {
		return a
	}
	if s.fallback != nil && (s.fallbackOnly == "" || name == s.fallbackOnly) {
		return s.fallback
	}
	return nil
}

// Catalog returns the strings of every app.
func (s *Set) Catalog() *content.Catalog { return s.catalog }

// Names returns the apps of the file, sorted (none without a file).
func (s *Set) Names() []string { return slices.Sorted(maps.Keys(s.apps)) }

// Close closes the idle connections of the set's senders.
func (s *Set) Close() {
	for _, snd := range s.senders {
		if c, ok := snd.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// Options are what Build needs besides the file.
type Options struct {
	// Fallback is the app of the single-app settings (flags): it serves
	// every app without a file, and the DefaultApp with one. Nil: none.
	Fallback *App
	// DefaultApp is the app the fallback serves when there is a file.
	DefaultApp string
	// Wrap, if set, wraps every sender built (the retry policy).
	Wrap func(push.Sender) (push.Sender, error)
	// Logger is given to the senders.
	Logger *slog.Logger
}

// Build makes the senders of every app of f (nil f: the fallback alone)
// and checks every credential and template: a Set is built whole or not
// at all.
func Build(ctx context.Context, f *File, o Options) (*Set, error) {
	s := &Set{apps: map[string]*App{}, fallback: o.Fallback}
	templates := map[string]content.Templates{}
	if f != nil {
		s.fallbackOnly = o.DefaultApp
		if s.fallbackOnly == "" {
			s.fallbackOnly = event.DefaultApp
		}
		for _, name := range f.Names() {
			c := f.Apps[name]
			a, err := buildApp(ctx, name, c, o)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("app %s: %w", name, err)
			}
			for _, snd := range []push.Sender{a.FCM, a.APNs} {
				if snd != nil {
					s.senders = append(s.senders, snd)
				}
			}
			s.apps[name] = a
			templates[name] = c.Templates
		}
	}
	cat, err := content.NewCatalog(templates)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.catalog = cat
	return s, nil
}

func buildApp(ctx context.Context, name string, c Config, o Options) (*App, error) {
	a := &App{Name: name, Style: c.style(), MutableContent: c.MutableContent}
	wrap := o.Wrap
	if wrap == nil {
		wrap = func(s push.Sender) (push.Sender, error) { return s, nil }
	}
	// closeAll closes what was built before an error.
	closeAll := func(ss ...push.Sender) {
		for _, s := range ss {
			if c, ok := s.(io.Closer); ok {
				_ = c.Close()
			}
		}
	}
	if c.FCM != nil {
		fcm, err := push.NewFCM(ctx, push.FCMConfig{CredentialsFile: c.FCM.CredentialsFile, ProjectID: c.FCM.ProjectID,
			Endpoint: c.FCM.Endpoint, Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("fcm: %w", err)
		}
		if a.FCM, err = wrap(fcm); err != nil {
			closeAll(fcm)
			return nil, err
		}
	}
	if ac := c.APNs; ac != nil {
		apns, err := push.NewAPNs(push.APNsConfig{KeyFile: ac.KeyFile, KeyID: ac.KeyID, TeamID: ac.TeamID, Topic: ac.Topics[0],
			Host: ac.Host, CAFile: ac.CAFile, Logger: o.Logger})
		if err != nil {
			closeAll(a.FCM)
			return nil, fmt.Errorf("apns: %w", err)
		}
		if a.APNs, err = wrap(apns); err != nil {
			closeAll(a.FCM, apns)
			return nil, err
		}
		a.Topics = slices.Clone(ac.Topics)
	}
	return a, nil
}

// Fixed holds a Set that never changes (tests, and tools without a file).
type Fixed struct{ Set *Set }

// Current returns the set.
func (f Fixed) Current() *Set { return f.Set }

// Single returns the apps of single-app settings: fcm and apns (either may
// be nil) push every app's devices, with the built-in strings.
func Single(fcm, apns push.Sender) Fixed {
	set, err := Build(context.Background(), nil, Options{Fallback: &App{FCM: fcm, APNs: apns}})
	if err != nil {
		panic("apps: the built-in strings do not load: " + err.Error()) // tested: never
	}
	return Fixed{set}
}
