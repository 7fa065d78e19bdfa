package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/apps"
	"github.com/nudgehq/nudge/content"
	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/registry"
)

type digestItem struct {
	r                               Reminder
	n                               int64 // unread messages
	sender, preview, title, message string
	known                           bool // the conversation's last message read already
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

// draft is what every device of a reminder is told, before it is written
// in the device's language: the conversations (the reminder's own first,
// then those of its digest) and the push's fields other than its text.
type draft struct {
	convs []content.Conversation
	base  push.Message
}

// draft reads the last message of each conversation of items not read yet
// and lays out the push.
func (w *Worker) draft(ctx context.Context, items []digestItem, badge int) (draft, error) {
	var d draft
	var total int64
	var message string
	for i, it := range items {
		total += it.n
		if !it.known {
			v, err := w.rdb.HMGet(ctx, w.cfg.Keyspace.Conversation(it.r.Shard, it.r.Conversation), convFields...).Result()
			if err != nil {
				return draft{}, fmt.Errorf("conversation: %w", err)
			}
			it.sender, it.preview, it.title, it.message = parseConversation(v)
		}
		if i == 0 {
			message = it.message
		}
		_, sender := keys.Unscope(it.sender) // as the app knows them
		d.convs = append(d.convs, content.Conversation{Sender: sender, Preview: it.preview, Title: it.title, Unread: it.n})
	}
	r := items[0].r
	_, conv := keys.Unscope(r.Conversation)
	data := map[string]string{"episode": r.Episode, "stage": strconv.Itoa(r.Stage), "unread": strconv.FormatInt(total, 10)}
	if message != "" {
		data["message_id"] = message // for an app that fetches (or decrypts) the message itself
	}
	d.base = push.Message{ConversationID: conv, CollapseKey: collapseKey(conv), ThreadID: conv, Badge: badge, Data: data}
	if len(items) > 1 {
		convs := make([]string, len(items))
		for i, it := range items {
			_, convs[i] = keys.Unscope(it.r.Conversation)
		}
		data["conversations"] = strings.Join(convs, ",")
		d.base.CollapseKey, d.base.ThreadID = "nudge-digest", "nudge-digest"
	}
	return d, nil
}

// target is how one device is pushed: its app's sender and the message in
// the device's language. Devices with the same key share one send.
type target struct {
	platform string
	sender   push.Sender // nil: reason says why it cannot be pushed
	reason   string
	msg      push.Message
	key      string
}

// target writes d for one device of a user with preferences pr.
func (w *Worker) target(set *apps.Set, d draft, dev registry.Device, pr registry.Prefs, appName string) target {
	t := target{platform: dev.Platform, key: dev.Platform + "\x00" + dev.App}
	a := set.App(dev.App)
	if a == nil {
		t.reason = ReasonUnknownApp
		return t
	}
	if t.sender = a.Sender(dev.Platform); t.sender == nil {
		t.reason = ReasonNoSender
		return t
	}
	t.msg = d.base
	if dev.Platform == push.PlatformAPNs {
		topic, ok := a.Topic(dev.Topic)
		if !ok {
			t.sender, t.reason = nil, ReasonUnknownTopic
			t.key += "\x00" + dev.Topic
			return t
		}
		t.msg.Topic = topic
	}
	st := a.Style
	st.Locale = dev.Locale
	st.Previews = stricter(st.Previews, pr.Previews)
	txt, err := set.Catalog().Render(a.Name, st, d.convs)
	if err != nil {
		w.met.templateErrors.WithLabelValues(appName).Inc()
		w.log.Warn("reminder template failed: the built-in English text goes out", "app", appName, "locale", dev.Locale, "err", err)
	}
	t.msg.Title, t.msg.Body = txt.Title, txt.Body
	t.msg.TitleLocKey, t.msg.TitleLocArgs, t.msg.BodyLocKey, t.msg.BodyLocArgs = txt.TitleLocKey, txt.TitleLocArgs, txt.BodyLocKey, txt.BodyLocArgs
	t.msg.MutableContent = a.MutableContent
	t.key = strings.Join([]string{t.key, t.msg.Topic, txt.Title, txt.Body, txt.TitleLocKey, txt.BodyLocKey}, "\x00")
	return t
}

// previewRank orders previews settings by how little they show.
var previewRank = map[string]int{content.PreviewsShow: 1, content.PreviewsSender: 2, content.PreviewsHidden: 3}

// stricter returns the previews setting that shows less.
func stricter(a, b string) string {
	if previewRank[b] > previewRank[a] {
		return b
	}
	return a
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
	ks := w.cfg.Keyspace
	pipe := w.rdb.Pipeline()
	ep := pipe.HMGet(ctx, ks.Episode(shard, user, conv), episodeFields...)
	n := pipe.HGet(ctx, ks.Badge(shard, user), conv)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return episodeState{}, fmt.Errorf("episode state: %w", err)
	}
	unread, _ := strconv.ParseInt(n.Val(), 10, 64)
	return parseEpisode(ep.Val(), unread), nil
}
