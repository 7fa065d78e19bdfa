package event

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
)

// checkKeys finds object keys that encoding/json would accept but the
// contract does not, in data, which must be valid JSON:
//   - a key that appears twice in one object (encoding/json keeps the last
//     silently; an event with two "type" or "user" keys is ambiguous);
//   - a key of the event or of quiet_hours that matches a field only when
//     case is ignored ("Type" for "type"): encoding/json matches names
//     case-insensitively, the JSON Schema and other languages do not.
//
// Keys are compared after unescaping ("\u0074ype" equals "type"). It
// returns the offending key and whether it is a duplicate (else a casing).
func checkKeys(data []byte) (key string, dup, bad bool) {
	s := dupScanner{data: data}
	s.value(eventFields)
	return s.key, s.dup, s.bad
}

var (
	eventFields = fieldNames(Event{})
	quietFields = fieldNames(QuietHours{})
)

// fieldNames lists the JSON names of a struct's fields.
func fieldNames(v any) []string {
	t := reflect.TypeOf(v)
	var out []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out = append(out, name)
	}
	return out
}

type dupScanner struct {
	data []byte
	i    int
	key  string // the first offending key (it may be "")
	dup  bool
	bad  bool // an offending key was found: the scan stops
}

func (s *dupScanner) found(key []byte, dup bool) {
	if !s.bad {
		s.key, s.dup, s.bad = clip(string(key)), dup, true
	}
}

// checkCase reports a key that equals a field name only when case is
// ignored.
func (s *dupScanner) checkCase(key []byte, fields []string) {
	for _, f := range fields {
		if string(key) == f {
			return
		}
	}
	for _, f := range fields {
		// EqualFold, like encoding/json, also folds "ſ" to "s" and the
		// Kelvin sign to "k".
		if strings.EqualFold(f, string(key)) {
			s.found(key, false)
			return
		}
	}
}

func (s *dupScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// value skips one value; fields are the known keys if it is an object.
func (s *dupScanner) value(fields []string) {
	s.space()
	if s.i >= len(s.data) || s.bad {
		return
	}
	switch s.data[s.i] {
	case '{':
		s.object(fields)
	case '[':
		s.i++
		for s.i < len(s.data) && !s.bad {
			s.space()
			if s.i >= len(s.data) {
				return
			}
			if s.data[s.i] == ']' {
				s.i++
				return
			}
			s.value(nil)
			s.space()
			if s.i < len(s.data) && s.data[s.i] == ',' {
				s.i++
			}
		}
	case '"':
		s.str()
	default:
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', ']', '}', ' ', '\t', '\r', '\n':
				return
			}
			s.i++
		}
	}
}

// str skips a string at s.i and returns its raw contents and whether it
// holds escapes.
func (s *dupScanner) str() ([]byte, bool) {
	s.i++ // opening quote
	start, esc := s.i, false
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case '\\':
			esc = true
			s.i += 2
			continue
		case '"':
			raw := s.data[start:s.i]
			s.i++
			return raw, esc
		}
		s.i++
	}
	return s.data[start:], esc
}

func (s *dupScanner) object(fields []string) {
	s.i++ // {
	var small [16][]byte
	seen := small[:0]
	var many map[string]struct{}
	for !s.bad {
		s.space()
		if s.i >= len(s.data) {
			return
		}
		if s.data[s.i] == '}' {
			s.i++
			return
		}
		if s.data[s.i] == ',' {
			s.i++
			continue
		}
		raw, esc := s.str()
		key := raw
		if esc {
			var k string
			if json.Unmarshal(s.data[s.i-len(raw)-2:s.i], &k) == nil {
				key = []byte(k)
			}
		}
		s.checkCase(key, fields)
		if many != nil {
			if _, ok := many[string(key)]; ok {
				s.found(key, true)
				return
			}
			many[string(key)] = struct{}{}
		} else {
			for _, k := range seen {
				if bytes.Equal(k, key) {
					s.found(key, true)
					return
				}
			}
			if len(seen) < cap(seen) {
				seen = append(seen, key)
			} else {
				many = make(map[string]struct{}, 2*len(seen))
				for _, k := range seen {
					many[string(k)] = struct{}{}
				}
				many[string(key)] = struct{}{}
			}
		}
		s.space()
		if s.i < len(s.data) && s.data[s.i] == ':' {
			s.i++
		}
		var nested []string
		if len(fields) > 0 && string(key) == "quiet_hours" {
			nested = quietFields
		}
		s.value(nested)
	}
}
