// Package streamid reads Redis stream entry ids, "<unix ms>-<seq>": it
// orders them, steps past one, and tells when Redis added an entry (the
// time of the node holding the stream).
package streamid

import (
	"strconv"
	"strings"
	"time"
)

// ID is a parsed entry id. The zero ID is "0-0", before every entry.
type ID struct{ Ms, Seq uint64 }

// Parse parses an entry id; ok is false for anything else (a special id
// such as "$" or ">", a partial one such as "5").
func Parse(s string) (id ID, ok bool) {
	a, b, found := strings.Cut(s, "-")
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if !found || err1 != nil || err2 != nil {
		return ID{}, false
	}
	return ID{ms, seq}, true
}

// Of returns the id s parses to, the zero ID if it does not parse.
func Of(s string) ID {
	id, _ := Parse(s)
	return id
}

// Less reports whether a comes before b in a stream.
func (a ID) Less(b ID) bool { return a.Ms < b.Ms || a.Ms == b.Ms && a.Seq < b.Seq }

// Next returns the id right after a: the smallest one greater than it.
func (a ID) Next() ID { return ID{a.Ms, a.Seq + 1} }

// String formats a as Redis does.
func (a ID) String() string {
	return strconv.FormatUint(a.Ms, 10) + "-" + strconv.FormatUint(a.Seq, 10)
}

// Time is when Redis added the entry, to the millisecond.
func (a ID) Time() time.Time { return time.UnixMilli(int64(a.Ms)) }

// Less reports whether entry id a comes before b; an id that does not
// parse counts as "0-0", before every entry.
func Less(a, b string) bool { return Of(a).Less(Of(b)) }
