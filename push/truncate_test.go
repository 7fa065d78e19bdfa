package push_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nudgehq/nudge/push"
)

func TestTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"fits", "hello", 5, "hello"},
		{"fits with room", "hello", 50, "hello"},
		{"empty", "", 0, ""},
		{"zero budget", "hello", 0, ""},
		{"negative budget", "hello", -3, ""},
		{"ascii cut", "hello world", 8, "hello…"},
		{"trailing space dropped", "hello world", 9, "hello…"},
		{"two-byte runes", "ääää", 7, "ää…"},
		{"no split of a 4-byte rune", "ab😀cdef", 8, "ab…"},
		{"room for the rune", "ab😀cdef", 9, "ab😀…"},
		{"budget below ellipsis", "hello", 2, "he"},
		{"budget below ellipsis multibyte", "äb", 1, ""},
		{"invalid utf-8 kept byte-wise", "a\xffb\xfecdef", 6, "a\xffb…"},
		{"lone continuation bytes", "\x80\x80\x80\x80\x80", 4, "\x80…"},
		{"truncated sequence at cut", "abc\xe2\x82", 4, "a…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := push.Truncate(tc.in, tc.max); got != tc.want {
				t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

// FuzzTruncate checks the properties senders rely on, for any input: the result fits, a
// string that fits is untouched, a cut string is a prefix plus "…", and valid UTF-8 stays
// valid (no sequence is split).
func FuzzTruncate(f *testing.F) {
	f.Add("hello world", 8)
	f.Add("Grüße 😀 aus Köln", 10)
	f.Add("\xff\xfe\x80abc", 4)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, s string, maxBytes int) {
		got := push.Truncate(s, maxBytes)
		if len(got) > max(maxBytes, 0) {
			t.Fatalf("Truncate(%q, %d) = %q: %d bytes", s, maxBytes, got, len(got))
		}
		if len(s) <= maxBytes {
			if got != s {
				t.Fatalf("Truncate(%q, %d) = %q, want it unchanged", s, maxBytes, got)
			}
			return
		}
		prefix := got
		if maxBytes >= len("…") {
			var ok bool
			if prefix, ok = strings.CutSuffix(got, "…"); !ok {
				t.Fatalf("Truncate(%q, %d) = %q: no ellipsis", s, maxBytes, got)
			}
		}
		if !strings.HasPrefix(s, prefix) {
			t.Fatalf("Truncate(%q, %d) = %q: not a prefix", s, maxBytes, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q: split a UTF-8 sequence", s, maxBytes, got)
		}
	})
}

func TestRedactToken(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                    "…(0)",
		"ab":                  "a…(2)",
		"0123456789abcdef":    "012345…(16)",
		"ééééé":               "éé…(10)", // never cuts inside a rune
		"abc\x80\x80\x80\x80": "ab…(7)",
	} {
		if got := push.RedactToken(in); got != want {
			t.Errorf("RedactToken(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("f", 64)
	if got := push.RedactToken(long); strings.Contains(got, long[:7]) {
		t.Errorf("RedactToken leaks %q", got)
	}
}

func TestOutcomeString(t *testing.T) {
	t.Parallel()
	for o, want := range map[push.Outcome]string{
		push.Delivered:    "delivered",
		push.TokenInvalid: "token_invalid",
		push.Retry:        "retry",
		push.Failed:       "failed",
		push.Outcome(0):   "outcome(0)",
		push.Outcome(99):  "outcome(99)",
	} {
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), got, want)
		}
	}
}

func TestMessageValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		msg  push.Message
		ok   bool
	}{
		{"title only", push.Message{Title: "t"}, true},
		{"body only", push.Message{Body: "b"}, true},
		{"no text", push.Message{Data: map[string]string{"a": "b"}}, false},
		{"collapse key at limit", push.Message{Title: "t", CollapseKey: strings.Repeat("k", 64)}, true},
		{"collapse key over limit", push.Message{Title: "t", CollapseKey: strings.Repeat("k", 65)}, false},
		{"negative ttl", push.Message{Title: "t", TTL: -1}, false},
		{"reserved from", push.Message{Title: "t", Data: map[string]string{"from": "x"}}, false},
		{"reserved gcm prefix", push.Message{Title: "t", Data: map[string]string{"gcm.n": "x"}}, false},
		{"reserved aps", push.Message{Title: "t", Data: map[string]string{"aps": "x"}}, false},
		{"empty key", push.Message{Title: "t", Data: map[string]string{"": "x"}}, false},
		{"collapse_key data allowed", push.Message{Title: "t", Data: map[string]string{"collapse": "x"}}, true},
	} {
		err := tc.msg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
