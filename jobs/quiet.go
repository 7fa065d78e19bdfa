package jobs

import "time"

// quietUntil returns the end of the quiet window that now falls in, in the
// user's time zone, or the zero time if now is outside it. start and end
// are minutes of the local day; start > end spans midnight; start < 0
// means no quiet hours. The end is computed on the local calendar, so it
// is right across daylight-saving changes (22:00 to 07:00 is always until
// 07:00 local, whatever happened to the clocks that night).
func quietUntil(now time.Time, loc *time.Location, start, end int) time.Time {
	if start < 0 || end < 0 || start == end {
		return time.Time{}
	}
	local := now.In(loc)
	m := local.Hour()*60 + local.Minute()
	y, mo, d := local.Date()
	at := func(day int) time.Time { return time.Date(y, mo, day, end/60, end%60, 0, 0, loc) }
	switch {
	case start < end && m >= start && m < end:
		return at(d)
	case start > end && m >= start:
		return at(d + 1)
	case start > end && m < end:
		return at(d)
	}
	return time.Time{}
}
