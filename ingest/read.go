package ingest

import (
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/internal/datastore"
)

// What one read pulls into ingest's memory, and into Redis's Lua, is
// bounded: Redis takes stream entries of up to 512 MB, and a batch of such
// entries would exhaust ingest's memory before a single one could be
// dead-lettered. Reads and claims therefore run as scripts that hand over
// an entry whole only when its fields and values total at most
// maxEntryBytes; a larger entry comes back as its size and the first
// maxDeadPayload bytes of its event (for its dead letter, reason
// too_large). A batch of BatchSize entries holds at most BatchSize ×
// maxEntryBytes. The blocking read that waits for new entries when a shard
// is idle takes one entry (COUNT 1): the one bound left is Redis's own, and
// the producer guard of docs/events.md refuses such entries at XADD.
//
// A script runs alone in Redis: every other client waits for it, the
// lease renewals of every shard included. So a script reads its entries a
// few at a time (4, then twice as many each time, up to 32) and stops once
// it has pulled maxReadBytes: 64 entries of 2 MB are read 4 at a time,
// each call holding Redis for the copy of 8 MB instead of 128 MB (2.5 s on
// a slow machine, longer than a lease). Entries of ordinary size still
// come in one script call per batch.

// maxEntryBytes bounds the entry a read hands over whole: twice an event's
// limit leaves room for the field names and for fields other producers
// add, and an event over its limit still reaches the decoder, which
// dead-letters it as too_large.
const maxEntryBytes = 2 * event.MaxEventBytes

// maxReadBytes is how many bytes of entries one read or claim script pulls
// before it returns what it has (at least one entry).
const maxReadBytes = 4 << 20

// oversizedField replaces the fields of an entry over maxEntryBytes: its
// value is the entry's size in bytes. The entry keeps EventField, cut to
// maxDeadPayload bytes.
const oversizedField = "nudge:oversized"

// boundedLua reads entries through fetch(n), which returns up to n of them
// (an XREADGROUP or XCLAIM reply), or nil when there are no more, as {id,
// fields} pairs, each entry over limit bytes replaced by its size and the
// start of its event; it stops at count entries, when fetch has no more,
// or once budget bytes were pulled.
const boundedLua = `
local function bounded(fetch, count, limit, keep, budget)
  local out, pulled, step = {}, 0, 4
  while #out < count and pulled < budget do
    local entries = fetch(math.min(step, count - #out))
    if not entries then break end
    for _, e in ipairs(entries) do
      if type(e) ~= 'table' or type(e[2]) ~= 'table' then
        if type(e) == 'table' then out[#out + 1] = {e[1]} end -- trimmed while pending
      else
        local f, size = e[2], 0
        for i = 1, #f do size = size + #f[i] end
        pulled = pulled + size
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
    step = math.min(step * 2, 32)
  end
  return out
end
`

// readScript reads new entries of a shard for the group, without
// blocking (XREADGROUP >), bounded.
//
// KEYS[1] stream. ARGV[1] entry limit (bytes), ARGV[2] bytes of the event
// kept from a larger entry, ARGV[3] group, ARGV[4] consumer, ARGV[5]
// count, ARGV[6] bytes to pull at most (maxReadBytes). Returns {id,
// {field, value, ...}} pairs.
var readScript = datastore.NewScript("ingest", boundedLua+`
local drained = false
local function fetch(n)
  if drained then return nil end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[3], ARGV[4], 'COUNT', n, 'STREAMS', KEYS[1], '>')
  if not r or #r[1][2] == 0 then return nil end
  drained = #r[1][2] < n -- fewer than asked: no more new entries now
  return r[1][2]
end
return bounded(fetch, tonumber(ARGV[5]), tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[6]))`)

// claimEntriesScript claims pending entries of a shard for this consumer
// (XCLAIM, min idle 0: the caller chose them), bounded: it claims the ids
// in order, a few at a time, and stops once it has pulled ARGV[5] bytes,
// leaving the rest pending for the next claim. An entry trimmed from the
// stream while pending comes back as {id}.
//
// KEYS[1] stream. ARGV[1] entry limit (bytes), ARGV[2] bytes of the event
// kept from a larger entry, ARGV[3] group, ARGV[4] consumer, ARGV[5] bytes
// to pull at most (maxReadBytes), ARGV[6..] entry ids.
var claimEntriesScript = datastore.NewScript("ingest", boundedLua+`
local first = 6
local function fetch(n)
  if first > #ARGV then return nil end
  local last = math.min(first + n - 1, #ARGV)
  local r = redis.call('XCLAIM', KEYS[1], ARGV[3], ARGV[4], 0, unpack(ARGV, first, last))
  first = last + 1
  return r
end
return bounded(fetch, #ARGV - 5, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5]))`)

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
