package ingest

import (
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/datastore"
)

// What one read pulls into ingest's memory is bounded: Redis takes stream
// entries of up to 512 MB, and a batch of such entries would exhaust
// ingest's memory before a single one could be dead-lettered. Reads and
// claims therefore run as scripts that hand over an entry whole only when
// its fields and values total at most maxEntryBytes; a larger entry comes
// back as its size and the first maxDeadPayload bytes of its event (for
// its dead letter, reason too_large). A batch of BatchSize entries holds at
// most BatchSize × maxEntryBytes. The blocking read that waits for new
// entries when a shard is idle takes one entry (COUNT 1): the one bound
// left is Redis's own, and the producer guard of docs/events.md refuses
// such entries at XADD.

// maxEntryBytes bounds the entry a read hands over whole: twice an event's
// limit leaves room for the field names and for fields other producers
// add, and an event over its limit still reaches the decoder, which
// dead-letters it as too_large.
const maxEntryBytes = 2 * event.MaxEventBytes

// oversizedField replaces the fields of an entry over maxEntryBytes: its
// value is the entry's size in bytes. The entry keeps EventField, cut to
// maxDeadPayload bytes.
const oversizedField = "nudge:oversized"

// boundedLua turns the entries of an XREADGROUP or XCLAIM reply into
// {id, fields} pairs, each entry over ARGV[1] bytes replaced by its size
// and the start of its event.
const boundedLua = `
local function bounded(entries, limit, keep)
  local out = {}
  for _, e in ipairs(entries) do
    if type(e) ~= 'table' or type(e[2]) ~= 'table' then
      if type(e) == 'table' then out[#out + 1] = {e[1]} end -- trimmed while pending
    else
      local f, size = e[2], 0
      for i = 1, #f do size = size + #f[i] end
      if size <= limit then
        out[#out + 1] = e
      else
        local ev = ''
        for i = 1, #f, 2 do
          if f[i] == 'event' then ev = f[i + 1] end
        end
        out[#out + 1] = {e[1], {'` + oversizedField + `', tostring(size), 'event', string.sub(ev, 1, keep)}}
      end
    end
  end
  return out
end
`

// readScript reads new entries of a shard for the group, without
// blocking (XREADGROUP >), bounded.
//
// KEYS[1] stream. ARGV[1] entry limit (bytes), ARGV[2] bytes of the event
// kept from a larger entry, ARGV[3] group, ARGV[4] consumer, ARGV[5]
// count. Returns {id, {field, value, ...}} pairs.
var readScript = datastore.NewScript("ingest", boundedLua+`
local r = redis.call('XREADGROUP', 'GROUP', ARGV[3], ARGV[4], 'COUNT', ARGV[5], 'STREAMS', KEYS[1], '>')
if not r then return {} end
return bounded(r[1][2], tonumber(ARGV[1]), tonumber(ARGV[2]))`)

// claimEntriesScript claims pending entries of a shard for this consumer
// (XCLAIM, min idle 0: the caller chose them), bounded. An entry trimmed
// from the stream while pending comes back as {id}.
//
// KEYS[1] stream. ARGV[1] entry limit (bytes), ARGV[2] bytes of the event
// kept from a larger entry, ARGV[3] group, ARGV[4] consumer, ARGV[5..]
// entry ids.
var claimEntriesScript = datastore.NewScript("ingest", boundedLua+`
local r = redis.call('XCLAIM', KEYS[1], ARGV[3], ARGV[4], 0, unpack(ARGV, 5))
return bounded(r, tonumber(ARGV[1]), tonumber(ARGV[2]))`)

// parseEntries reads the reply of readScript or claimEntriesScript. An
// entry trimmed while pending has nil Values, as XCLAIM's own reply.
func parseEntries(v any) ([]redis.XMessage, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("entries: unexpected reply %T", v)
	}
	out := make([]redis.XMessage, 0, len(list))
	for _, e := range list {
		pair, ok := e.([]any)
		if !ok || len(pair) < 1 {
			return nil, fmt.Errorf("entries: unexpected entry %T", e)
		}
		id, _ := pair[0].(string)
		m := redis.XMessage{ID: id}
		if len(pair) > 1 {
			fields, _ := pair[1].([]any)
			m.Values = make(map[string]any, len(fields)/2)
			for i := 0; i+1 < len(fields); i += 2 {
				k, _ := fields[i].(string)
				m.Values[k] = fields[i+1]
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// oversized reports an entry a bounded read cut: its size in bytes.
func oversized(m redis.XMessage) (int64, bool) {
	v, ok := m.Values[oversizedField].(string)
	if !ok {
		return 0, false
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n, true
}
