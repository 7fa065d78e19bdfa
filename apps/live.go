package apps

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/internal/telemetry"
)

// Live holds the apps in use, and replaces them when the apps file or a
// credential file it names changes, or on Reload (SIGHUP). A change that
// does not load (a YAML error, a missing key, a template that does not
// render) is refused with an error log line, and the apps in use stay.
type Live struct {
	path string
	opts Options
	log  *slog.Logger
	cur  atomic.Pointer[Set]
	sum  [sha256.Size]byte // of the files the current set was loaded from
	used []string          // those files

	reloads *prometheus.CounterVec
}

// NewLive loads the apps file at path (none when path is empty: the
// fallback serves every app). It fails if the file does not load: a worker
// never starts with apps it cannot push. reg, if set, receives
// nudge_worker_apps_reloads_total{result}.
func NewLive(ctx context.Context, path string, o Options, reg prometheus.Registerer) (*Live, error) {
	l := &Live{path: path, opts: o, log: o.Logger,
		reloads: telemetry.CounterVec(reg, "nudge_worker_apps_reloads_total",
			"Reloads of the apps file, by result: loaded, refused (the apps in use stay).", "result")}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	set, sum, used, err := l.load(ctx)
	if err != nil {
		return nil, err
	}
	l.cur.Store(set)
	l.sum, l.used = sum, used
	return l, nil
}

// Current returns the apps in use.
func (l *Live) Current() *Set { return l.cur.Load() }

func (l *Live) load(ctx context.Context) (*Set, [sha256.Size]byte, []string, error) {
	var none [sha256.Size]byte
	if l.path == "" {
		set, err := Build(ctx, nil, l.opts)
		return set, none, nil, err
	}
	f, err := Load(l.path)
	if err != nil {
		return nil, none, nil, err
	}
	used := append([]string{l.path}, f.files()...)
	sum, err := digest(used)
	if err != nil {
		return nil, none, nil, err
	}
	set, err := Build(ctx, f, l.opts)
	if err != nil {
		return nil, none, nil, err
	}
	return set, sum, used, nil
}

// Reload loads the apps file again and puts it in use; on an error the
// apps in use stay, and the error says why.
func (l *Live) Reload(ctx context.Context) error {
	if l.path == "" {
		return nil
	}
	set, sum, used, err := l.load(ctx)
	if err != nil {
		l.reloads.WithLabelValues("refused").Inc()
		l.log.Error("apps file refused: the apps loaded before stay in use", "path", l.path, "err", err)
		// The files as they are now were refused: not again until they
		// change.
		if s, derr := digest(l.watched()); derr == nil {
			l.sum = s
		}
		return err
	}
	old := l.cur.Swap(set)
	l.sum, l.used = sum, used
	l.reloads.WithLabelValues("loaded").Inc()
	l.log.Info("apps file loaded", "path", l.path, "apps", set.Names())
	// Sends in flight may still use the old senders: their idle
	// connections are closed a little later.
	time.AfterFunc(time.Minute, old.Close)
	return nil
}

// watched lists the files a change of which reloads: the apps file and
// the credential files of the apps in use.
func (l *Live) watched() []string {
	if len(l.used) > 0 {
		return l.used
	}
	return []string{l.path}
}

// Run reloads the apps on each signal of hup and whenever the files they
// were loaded from change (looked at every interval), until ctx is done.
func (l *Live) Run(ctx context.Context, interval time.Duration, hup <-chan os.Signal) {
	if l.path == "" {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			l.log.Info("reloading the apps file (SIGHUP)", "path", l.path)
			_ = l.Reload(ctx)
		case <-tick.C:
			sum, err := digest(l.watched())
			if err == nil && sum != l.sum {
				l.log.Info("apps file or a credential changed: reloading", "path", l.path)
				_ = l.Reload(ctx)
			}
		}
	}
}

// digest hashes the contents of files; a missing file hashes as empty.
func digest(files []string) ([sha256.Size]byte, error) {
	h := sha256.New()
	for _, p := range files {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			h.Write([]byte{0})
			continue
		}
		if err != nil {
			return [sha256.Size]byte{}, err
		}
		_, err = io.Copy(h, io.LimitReader(f, maxFileBytes))
		f.Close()
		if err != nil {
			return [sha256.Size]byte{}, err
		}
		h.Write([]byte{1})
	}
	var out [sha256.Size]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// files lists the credential files the apps file names.
func (f *File) files() []string {
	var out []string
	for _, n := range f.Names() {
		c := f.Apps[n]
		if c.FCM != nil {
			out = append(out, c.FCM.CredentialsFile)
		}
		if c.APNs != nil {
			out = append(out, c.APNs.KeyFile)
			if c.APNs.CAFile != "" {
				out = append(out, c.APNs.CAFile)
			}
		}
	}
	return out
}
