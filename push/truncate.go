package push

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ellipsis marks a truncated text. It is 3 bytes in UTF-8 and is not escaped by encoding/json.
const ellipsis = "…"

// Truncate returns s shortened to at most maxBytes bytes. A string that fits is returned
// unchanged. Otherwise s is cut at a rune boundary, trailing white space is dropped and "…" is
// appended, all within maxBytes (when maxBytes is below the 3 bytes of "…", the cut text is
// returned without it). A UTF-8 sequence is never split; invalid bytes in s count as one-byte
// runes, so any input is accepted.
func Truncate(s string, maxBytes int) string {
	if len(s) <= maxBytes {
		return s
	}
	if maxBytes <= 0 {
		return ""
	}
	suffix := ellipsis
	budget := maxBytes - len(ellipsis)
	if budget < 0 {
		suffix, budget = "", maxBytes
	}
	cut := 0
	for cut < len(s) {
		_, size := utf8.DecodeRuneInString(s[cut:])
		if cut+size > budget {
			break
		}
		cut += size
	}
	return strings.TrimRightFunc(s[:cut], unicode.IsSpace) + suffix
}

// fitPayload shortens msg's Body, then its Title, as little as needed for encode(msg) to be
// at most limit bytes. It returns the message that fits and its encoding, or an error wrapping
// ErrPayloadTooLarge when even an empty title and body do not fit.
func fitPayload(msg Message, limit int, encode func(Message) ([]byte, error)) (Message, []byte, error) {
	b, err := encode(msg)
	if err != nil || len(b) <= limit {
		return msg, b, err
	}
	for _, field := range []func(*Message) *string{
		func(m *Message) *string { return &m.Body },
		func(m *Message) *string { return &m.Title },
	} {
		full := *field(&msg)
		if full == "" {
			continue
		}
		// Truncate(full, n) only grows with n, and so does the encoding: binary-search the
		// largest n that fits. JSON escapes make the encoded size of a text hard to predict.
		best, bestEnc := -1, []byte(nil)
		for lo, hi := 0, len(full)-1; lo <= hi; {
			mid := lo + (hi-lo)/2
			m := msg
			*field(&m) = Truncate(full, mid)
			b, err := encode(m)
			if err != nil {
				return msg, nil, err
			}
			if len(b) <= limit {
				best, bestEnc, lo = mid, b, mid+1
			} else {
				hi = mid - 1
			}
		}
		if best >= 0 {
			*field(&msg) = Truncate(full, best)
			return msg, bestEnc, nil
		}
		*field(&msg) = ""
	}
	if b, err = encode(msg); err != nil {
		return msg, nil, err
	}
	return msg, nil, fmt.Errorf("%w: %d bytes without title and body, limit %d", ErrPayloadTooLarge, len(b), limit)
}
