package ingest

import (
	"strings"
	"testing"
)

// FuzzRedactTokens: any payload, JSON or not, comes out without a
// token value longer than its 6-character prefix, and never panics.
func FuzzRedactTokens(f *testing.F) {
	f.Add(`{"token":"d7f3a1c9d7f3a1c9"}`)
	f.Add(`{"token" : "ab\"cdefgh\\ijk", "x":"token"}`)
	f.Add(`"token":"é€€€€€€€€"`)
	f.Add(`{"token":"`)
	f.Fuzz(func(t *testing.T, payload string) {
		out := RedactTokens(payload)
		for _, m := range tokenValue.FindAllStringSubmatch(out, -1) {
			v := m[2]
			if i := strings.Index(v, "…("); i < 0 || i > 6 {
				t.Fatalf("token value %q left in %q (from %q)", v, out, payload)
			}
		}
	})
}
