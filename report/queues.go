package report

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/hibiken/asynqmon"
	"golang.org/x/net/html"
)

// queuesUI serves asynqmon under a Content-Security-Policy it works
// under. asynqmon's page has two inline scripts (its flags and webpack's
// loader) and links two stylesheets of Google Fonts; its bundle (React,
// Material-UI) injects <style> elements. So the policy allows scripts of
// this origin and those two inline scripts by hash (computed from the page
// the handler renders, at start), inline styles, and nothing from another
// origin: the Google Fonts links are taken out of the page (the UI draws
// its icons as SVG; text falls back to the system's sans-serif).
type queuesUI struct {
	h   *asynqmon.HTTPHandler
	csp string
}

// googleFonts matches asynqmon's <link>s to Google Fonts.
var googleFonts = regexp.MustCompile(`<link rel="stylesheet" href="https://fonts\.googleapis\.com/[^"]*"/?>`)

func newQueuesUI(opts asynqmon.Options) (*queuesUI, error) {
	q := &queuesUI{h: asynqmon.New(opts)}
	req, err := http.NewRequest(http.MethodGet, QueuesPath+"/", nil)
	if err != nil {
		_ = q.h.Close()
		return nil, err
	}
	rec := newBufferWriter()
	q.h.ServeHTTP(rec, req)
	page := cleanQueuesPage(rec.body.Bytes())
	if rec.status() != http.StatusOK || !isQueuesPage(page) {
		_ = q.h.Close()
		return nil, fmt.Errorf("queues UI: asynqmon's page did not render (%d)", rec.status())
	}
	hashes, err := inlineScriptHashes(page)
	if err != nil {
		_ = q.h.Close()
		return nil, fmt.Errorf("queues UI: %w", err)
	}
	q.csp = "default-src 'self'; script-src 'self' " + strings.Join(hashes, " ") +
		"; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; manifest-src 'self'; " +
		"object-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	return q, nil
}

func (q *queuesUI) Close() error { return q.h.Close() }

func isQueuesPage(b []byte) bool {
	return bytes.HasPrefix(b, []byte("<!doctype html>"))
}

func cleanQueuesPage(b []byte) []byte {
	if !isQueuesPage(b) {
		return b
	}
	return googleFonts.ReplaceAll(b, nil)
}

// inlineScriptHashes returns the CSP hash sources of the inline scripts of
// page.
func inlineScriptHashes(page []byte) ([]string, error) {
	var hashes []string
	z := html.NewTokenizer(bytes.NewReader(page))
	inScript := false
	for {
		switch z.Next() {
		case html.ErrorToken:
			if len(hashes) == 0 {
				return nil, fmt.Errorf("no inline script in asynqmon's page")
			}
			return hashes, nil
		case html.StartTagToken:
			name, hasAttr := z.TagName()
			inScript = string(name) == "script" && !hasAttr
		case html.TextToken:
			if inScript {
				sum := sha256.Sum256(z.Raw())
				hashes = append(hashes, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
			}
		case html.EndTagToken:
			inScript = false
		}
	}
}

func (q *queuesUI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", q.csp)
	if strings.HasPrefix(r.URL.Path, QueuesPath+"/static/") {
		q.h.ServeHTTP(w, r) // the bundle: large, and never the page
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if strings.HasPrefix(r.URL.Path, QueuesPath+"/api/") {
		q.h.ServeHTTP(w, r)
		return
	}
	// Every other path answers the page (asynqmon routes in the browser)
	// or a small file (icons, manifest): buffer it to take the fonts out
	// of the page.
	rec := newBufferWriter()
	q.h.ServeHTTP(rec, r)
	body := cleanQueuesPage(rec.body.Bytes())
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	if isQueuesPage(body) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
	}
	w.WriteHeader(rec.status())
	_, _ = w.Write(body)
}

// bufferWriter keeps a response in memory.
type bufferWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newBufferWriter() *bufferWriter { return &bufferWriter{header: http.Header{}} }

func (b *bufferWriter) Header() http.Header { return b.header }

func (b *bufferWriter) Write(p []byte) (int, error) { return b.body.Write(p) }

func (b *bufferWriter) WriteHeader(code int) {
	b.code = cmp.Or(b.code, code)
}

func (b *bufferWriter) status() int {
	if b.code == 0 {
		return http.StatusOK
	}
	return b.code
}
