package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nudgehq/nudge/push/sandbox"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logWriter collects the JSON log and signals when a line with a given message appears.
type logWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	found chan struct{}
	once  sync.Once
}

func newLogWriter(msg string) *logWriter {
	return &logWriter{want: `"msg":"` + msg + `"`, found: make(chan struct{})}
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, []byte(w.want)) {
		w.once.Do(func() { close(w.found) })
	}
	return w.buf.Write(p)
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestRunServesUntilCancelled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{"NUDGE_PUSHSANDBOX_CREDS_DIR": dir}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := newLogWriter("credentials written")
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-fcm-addr", "127.0.0.1:0", "-apns-addr", "127.0.0.1:0", "-chaos-5xx", "0.1"},
			func(k string) string { return env[k] }, out)
	}()
	select {
	case <-out.found:
	case err := <-done:
		t.Fatalf("run returned early: %v\n%s", err, out)
	case <-time.After(30 * time.Second):
		t.Fatalf("no credentials written\n%s", out)
	}

	vars := map[string]string{}
	b, err := os.ReadFile(filepath.Join(dir, sandbox.EnvFile))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		vars[k] = v
	}
	for _, f := range []string{vars["NUDGE_FCM_CREDENTIALS_FILE"], vars["NUDGE_APNS_KEY_FILE"], vars["NUDGE_APNS_CA_FILE"]} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("credential file: %v", err)
		}
	}

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(vars["NUDGE_PUSH_SANDBOX_CONTROL_URL"] + "/faults")
	if err != nil {
		t.Fatal(err)
	}
	var set sandbox.FaultSet
	err = json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	if err != nil || set.Chaos == nil || set.Chaos.ServerError != 0.1 {
		t.Errorf("faults %+v, %v: want the -chaos-5xx flag applied", set, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(out.String(), `"msg":"shutting down"`) {
		t.Errorf("log lacks the shutdown line:\n%s", out)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	t.Parallel()
	getenv := func(string) string { return "" }
	var help bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, getenv, &help); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run(-h) = %v, want the settings and flag.ErrHelp (exit 0)", err)
	}
	for _, tc := range []struct {
		args []string
		want error
	}{
		{[]string{"-nope"}, nil},
		{[]string{"extra"}, nil},
		{[]string{"-log-level", "loud"}, nil},
		{[]string{"-fcm-addr", "127.0.0.1:0", "-apns-addr", "127.0.0.1:0", "-chaos-5xx", "2"}, nil},
		{[]string{"-fcm-addr", "256.1.1.1:1"}, nil},
	} {
		var out bytes.Buffer
		err := run(t.Context(), tc.args, getenv, &out)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("run(%q) = %v, want an error (%v)", tc.args, err, tc.want)
		}
	}
}
