package streamid

import (
	"testing"
	"time"
)

func TestParseAndOrder(t *testing.T) {
	for _, bad := range []string{"", "$", ">", "5", "5-", "-5", "a-1", "1-b", "1-2-3", "-1-2"} {
		if id, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) = %v, true; want false", bad, id)
		}
	}
	id, ok := Parse("1767225600000-7")
	if !ok || id != (ID{1767225600000, 7}) || id.String() != "1767225600000-7" {
		t.Fatalf("Parse = %v, %v", id, ok)
	}
	if !id.Time().Equal(time.UnixMilli(1767225600000)) || id.Next() != (ID{1767225600000, 8}) {
		t.Errorf("Time %v, Next %v", id.Time(), id.Next())
	}
	ordered := []string{"0-0", "0-1", "9-0", "10-0", "10-2", "10-10", "11-0"} // numeric, not text, order
	for i := range ordered {
		for j := range ordered {
			if got := Less(ordered[i], ordered[j]); got != (i < j) {
				t.Errorf("Less(%s, %s) = %v", ordered[i], ordered[j], got)
			}
		}
	}
	if !Less("junk", "0-1") || Less("0-1", "junk") {
		t.Error("an id that does not parse is not first")
	}
}
