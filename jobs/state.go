package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/streamid"
)

// episodeState is an open episode as ingest keeps it.
type episodeState struct {
	id        string
	n         int64
	since     int64
	mentioned bool
}

// episodeFields are the fields of an episode hash a reminder reads.
var episodeFields = []string{"id", "since", "m"}

// parseEpisode reads the reply of HMGET episode episodeFields, and the
// episode's unread count: its conversation's field of the user's badge
// hash (where ingest keeps it), n, 0 if absent.
func parseEpisode(v []any, n int64) episodeState {
	var st episodeState
	if len(v) != len(episodeFields) {
		return st
	}
	st.id, _ = v[0].(string)
	since, _ := v[1].(string)
	st.since, _ = strconv.ParseInt(since, 10, 64)
	m, _ := v[2].(string)
	st.mentioned = m == "1"
	if st.id != "" {
		st.n = n
	}
	return st
}

// state is what a reminder needs to know from Redis: the episode, the
// devices already reached, presence, the rate limit, the user's unread
// conversations and the conversation's last message.
type state struct {
	ep                     episodeState
	done                   bool
	outcome                Outcome  // of a finished reminder
	sent                   []string // device digests already reached
	onlineUntil            time.Time
	rate                   int
	rateKey                string
	windowEnd              time.Time
	unread                 map[string]int64 // conversation -> unread, over all shards
	sender, preview, title string
	message                string // the conversation's last message id
}

// readStates reads the state of every reminder of rs in one pipeline.
func (w *Worker) readStates(ctx context.Context, rs []Reminder, now time.Time) ([]state, error) {
	ks := w.cfg.Keyspace
	type cmds struct {
		ep, conv *redis.SliceCmd
		sent     *redis.StringSliceCmd
		presence *redis.ZSliceCmd
		rate     *redis.IntCmd
		badges   []*redis.MapStringStringCmd
	}
	sts := make([]state, len(rs))
	cs := make([]cmds, len(rs))
	pipe := w.rdb.Pipeline()
	for i, r := range rs {
		st := &sts[i]
		st.unread = map[string]int64{}
		st.rateKey, st.windowEnd = w.rateKey(r.User, now)
		userShard := ks.Shard(r.User)
		c := &cs[i]
		c.ep = pipe.HMGet(ctx, ks.Episode(r.Shard, r.User, r.Conversation), episodeFields...)
		c.sent = pipe.SMembers(ctx, w.sentKey(r))
		c.presence = pipe.ZRevRangeWithScores(ctx, ks.Presence(userShard, r.User), 0, 0)
		c.rate = pipe.SCard(ctx, st.rateKey)
		c.conv = pipe.HMGet(ctx, ks.Conversation(r.Shard, r.Conversation), convFields...)
		c.badges = make([]*redis.MapStringStringCmd, ks.Shards)
		for s := range c.badges {
			c.badges[s] = pipe.HGetAll(ctx, ks.Badge(s, r.User))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reminder state: %w", err)
	}
	for i := range rs {
		st, c := &sts[i], &cs[i]
		for _, m := range c.sent.Val() {
			switch {
			case m == doneMember:
				st.done = true
			case strings.HasPrefix(m, outcomePrefix):
				st.outcome, _ = ParseOutcome(m)
			case !strings.HasPrefix(m, "!"): // marks start with "!", device digests never do
				st.sent = append(st.sent, m)
			}
		}
		if z := c.presence.Val(); len(z) > 0 && int64(z[0].Score) > now.UnixMilli() {
			st.onlineUntil = time.UnixMilli(int64(z[0].Score)).Add(time.Second)
		}
		st.rate = int(c.rate.Val())
		st.sender, st.preview, st.title, st.message = parseConversation(c.conv.Val())
		for _, b := range c.badges {
			for conv, v := range b.Val() {
				if n, _ := strconv.ParseInt(v, 10, 64); n > 0 {
					st.unread[conv] = n
				}
			}
		}
		st.ep = parseEpisode(c.ep.Val(), st.unread[rs[i].Conversation])
	}
	return sts, nil
}

// convFields are the fields of a conversation hash a reminder shows.
var convFields = []string{"sender", "preview", "title", "msg"}

// parseConversation reads the reply of HMGET conversation convFields.
func parseConversation(v []any) (sender, preview, title, message string) {
	if len(v) != len(convFields) {
		return
	}
	sender, _ = v[0].(string)
	preview, _ = v[1].(string)
	title, _ = v[2].(string)
	message, _ = v[3].(string)
	return
}

// notAppliedRetry is how long a reminder whose episode has not been
// applied yet waits before it looks again.
const notAppliedRetry = 2 * time.Second

// entriesApplied reports, for each reminder of rs, whether ingest has
// applied the stream entry that opened its episode: its consumer group has
// read past it and it is not pending. A missing stream or group counts as
// applied (nothing will apply it). One pipeline reads every shard's group
// and every entry's pending state.
func (w *Worker) entriesApplied(ctx context.Context, rs []Reminder) ([]bool, error) {
	groups := map[int]*redis.XInfoGroupsCmd{}
	pending := make([]*redis.XPendingExtCmd, len(rs))
	pipe := w.rdb.Pipeline()
	for i, r := range rs {
		stream := w.cfg.Keyspace.Stream(r.Shard)
		if groups[r.Shard] == nil {
			groups[r.Shard] = pipe.XInfoGroups(ctx, stream)
		}
		pending[i] = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: w.cfg.IngestGroup, Start: r.Episode, End: r.Episode, Count: 1})
	}
	_, _ = pipe.Exec(ctx)
	out := make([]bool, len(rs))
	for i, r := range rs {
		gs, err := groups[r.Shard].Result()
		if err != nil {
			if datastore.NoSuchKey(err) {
				out[i] = true
				continue
			}
			return nil, fmt.Errorf("ingest group of shard %d: %w", r.Shard, err)
		}
		out[i] = true
		for _, g := range gs {
			if g.Name != w.cfg.IngestGroup {
				continue
			}
			if !idAtOrBefore(r.Episode, g.LastDeliveredID) {
				out[i] = false // not read yet
				break
			}
			p, err := pending[i].Result()
			if err != nil {
				return nil, fmt.Errorf("pending of shard %d: %w", r.Shard, err)
			}
			out[i] = len(p) == 0
		}
	}
	return out, nil
}

// idAtOrBefore reports whether stream entry id a is at or before b
// ("<ms>-<seq>"). An id that does not parse counts as before.
func idAtOrBefore(a, b string) bool {
	x, ok1 := streamid.Parse(a)
	y, ok2 := streamid.Parse(b)
	return !ok1 || !ok2 || !y.Less(x)
}

func (w *Worker) sentKey(r Reminder) string { return w.cfg.Keyspace.Sent(r.Shard, r.ID()) }

func (w *Worker) rateKey(user string, now time.Time) (string, time.Time) {
	win := now.UnixMilli() / w.cfg.RateWindow.Milliseconds()
	ks := w.cfg.Keyspace
	return ks.RateLimit(ks.Shard(user), user, win), time.UnixMilli((win + 1) * w.cfg.RateWindow.Milliseconds())
}
