package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

type digestItem struct {
	r               Reminder
	n               int64 // unread messages
	sender, preview string
	known           bool // sender and preview read already
}

// maxDigest caps the conversations of one digest push.
const maxDigest = 20

// digestCandidates finds the user's other first reminders due within the
// digest window that would be sent: they go out with this one.
func (w *Worker) digestCandidates(ctx context.Context, r Reminder, prefs registry.Prefs, all map[string]int64, now time.Time) ([]digestItem, error) {
	unread := make(map[string]int64, len(all))
	for c, n := range all {
		if c != r.Conversation {
			unread[c] = n
		}
	}
	convs := make([]string, 0, len(unread))
	for c := range unread {
		if prefs.Mode(c) != event.ModeMuted {
			convs = append(convs, c)
		}
	}
	sort.Strings(convs)
	delay := w.cfg.Stages[0]
	if prefs.ReminderDelay > 0 {
		delay = prefs.ReminderDelay
	}
	var out []digestItem
	for _, c := range convs {
		if len(out) >= maxDigest-1 {
			break
		}
		shard := w.cfg.Keyspace.Shard(c)
		st, err := w.episode(ctx, shard, r.User, c)
		if err != nil {
			return nil, err
		}
		if st.id == "" || st.n == 0 || prefs.Mode(c) == event.ModeMentions && !st.mentioned {
			continue
		}
		due := time.UnixMilli(st.since).Add(delay)
		if due.After(now.Add(w.cfg.DigestWindow)) {
			continue
		}
		other := Reminder{Shard: shard, App: r.App, User: r.User, Conversation: c, Episode: st.id, Stage: 1, Due: due.UnixMilli()}
		done, err := w.rdb.SIsMember(ctx, w.sentKey(other), doneMember).Result()
		if err != nil {
			return nil, err
		}
		if !done {
			out = append(out, digestItem{r: other, n: st.n})
		}
	}
	return out, nil
}

// message builds the push: one conversation's last message, or a digest.
func (w *Worker) message(ctx context.Context, items []digestItem, badge int) (push.Message, error) {
	type last struct{ sender, preview string }
	lasts := make([]last, len(items))
	var total int64
	for i, it := range items {
		total += it.n
		if it.known {
			lasts[i].sender, lasts[i].preview = it.sender, it.preview
			continue
		}
		v, err := w.rdb.HMGet(ctx, w.cfg.Keyspace.Conversation(it.r.Shard, it.r.Conversation), "sender", "preview").Result()
		if err != nil {
			return push.Message{}, fmt.Errorf("conversation: %w", err)
		}
		lasts[i].sender, _ = v[0].(string)
		lasts[i].preview, _ = v[1].(string)
	}
	for i := range lasts {
		_, lasts[i].sender = keys.Unscope(lasts[i].sender)
	}
	r := items[0].r
	_, conv := keys.Unscope(r.Conversation) // as the app knows it
	data := map[string]string{"episode": r.Episode, "stage": strconv.Itoa(r.Stage), "unread": strconv.FormatInt(total, 10)}
	line := func(l last) string {
		switch {
		case l.sender != "" && l.preview != "":
			return l.sender + ": " + l.preview
		case l.sender != "":
			return "New message from " + l.sender
		}
		return "New message"
	}
	if len(items) == 1 {
		title := "New message"
		if items[0].n > 1 {
			title = strconv.FormatInt(items[0].n, 10) + " unread messages"
		}
		return push.Message{Title: title, Body: line(lasts[0]), ConversationID: conv,
			CollapseKey: collapseKey(conv), ThreadID: conv, Badge: badge, Data: data}, nil
	}
	var body strings.Builder
	convs := make([]string, len(items))
	for i, it := range items {
		_, convs[i] = keys.Unscope(it.r.Conversation)
		if i > 0 {
			body.WriteByte('\n')
		}
		body.WriteString(line(lasts[i]))
	}
	data["conversations"] = strings.Join(convs, ",")
	return push.Message{
		Title:          fmt.Sprintf("%d conversations, %d unread messages", len(items), total),
		Body:           body.String(),
		ConversationID: conv,
		CollapseKey:    "nudge-digest",
		ThreadID:       "nudge-digest",
		Badge:          badge,
		Data:           data,
	}, nil
}

// collapseKey fits a conversation id in the 64 bytes providers allow.
func collapseKey(conv string) string {
	if len(conv) <= 64 {
		return conv
	}
	h := sha256.Sum256([]byte(conv))
	return hex.EncodeToString(h[:16])
}

func (w *Worker) episode(ctx context.Context, shard int, user, conv string) (episodeState, error) {
	v, err := w.rdb.HMGet(ctx, w.cfg.Keyspace.Episode(shard, user, conv), "id", "n", "since", "m").Result()
	if err != nil {
		return episodeState{}, fmt.Errorf("episode state: %w", err)
	}
	return parseEpisode(v), nil
}
