package event

import (
	"bytes"
	"encoding/json"
)

// duplicateKey reports the first object key that appears twice in one
// object of data, which must be valid JSON. encoding/json keeps the last of
// two equal keys silently; an event with two "type" or "user" keys is
// ambiguous, so it is rejected instead. Keys are compared after unescaping
// ("\u0074ype" equals "type").
func duplicateKey(data []byte) (string, bool) {
	s := dupScanner{data: data}
	return s.value()
}

type dupScanner struct {
	data []byte
	i    int
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

func (s *dupScanner) value() (string, bool) {
	s.space()
	if s.i >= len(s.data) {
		return "", false
	}
	switch s.data[s.i] {
	case '{':
		return s.object()
	case '[':
		s.i++
		for {
			s.space()
			if s.i >= len(s.data) {
				return "", false
			}
			if s.data[s.i] == ']' {
				s.i++
				return "", false
			}
			if k, dup := s.value(); dup {
				return k, true
			}
			s.space()
			if s.i < len(s.data) && s.data[s.i] == ',' {
				s.i++
			}
		}
	case '"':
		s.str()
		return "", false
	default:
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', ']', '}', ' ', '\t', '\r', '\n':
				return "", false
			}
			s.i++
		}
		return "", false
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

func (s *dupScanner) object() (string, bool) {
	s.i++ // {
	var small [16][]byte
	seen := small[:0]
	var many map[string]struct{}
	for {
		s.space()
		if s.i >= len(s.data) {
			return "", false
		}
		if s.data[s.i] == '}' {
			s.i++
			return "", false
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
		if many != nil {
			if _, ok := many[string(key)]; ok {
				return clip(string(key)), true
			}
			many[string(key)] = struct{}{}
		} else {
			for _, k := range seen {
				if bytes.Equal(k, key) {
					return clip(string(key)), true
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
		if k, dup := s.value(); dup {
			return k, true
		}
	}
}
