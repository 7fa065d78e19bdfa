// Package content writes the text of reminders, per app and per device
// locale: built-in translations (locales/*.yaml) that an app's own
// templates override string by string, plural forms by the CLDR rules of
// each language (go-i18n), previews shown or hidden, and for apps that
// localize on the device, localization keys and their arguments instead of
// finished text.
//
// A locale falls back from the most specific to the least: de-AT finds de,
// then the app's default locale, then built-in English. A template that
// fails to render never holds a reminder back: Render returns the built-in
// English text with the error, for the caller to count.
package content

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/nicksnyder/go-i18n/v2/i18n"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
)

//go:embed locales/*.yaml
var locales embed.FS

// How much of a message a push shows (an app's or a user's previews
// setting).
const (
	PreviewsShow   = "show"   // "Alice: see you at 5"
	PreviewsSender = "sender" // "New message from Alice"
	PreviewsHidden = "hidden" // "You have new messages"
)

// Where the text is localized (an app's localize setting).
const (
	LocalizeServer = "server" // Nudge sends finished text in the device's language
	LocalizeDevice = "device" // Nudge sends localization keys and arguments as well; the app's own strings win
)

// The ids of the strings of a reminder. An app's templates use the same
// ids; on the device the localization keys are LocKeyPrefix + id.
const (
	NewMessage       = "new_message"        // title of one unread message
	UnreadMessages   = "unread_messages"    // title of more: plural on .Count
	Conversations    = "conversations"      // "3 conversations": plural on .Count (digest title)
	DigestTitle      = "digest_title"       // .Conversations, .Messages: the two above, rendered
	BodyPreview      = "body_preview"       // .Sender, .Preview
	BodyFrom         = "body_from"          // .Sender
	BodyGroupPreview = "body_group_preview" // .Sender, .Title, .Preview
	BodyGroupFrom    = "body_group_from"    // .Sender, .Title
	BodyHidden       = "body_hidden"        // no placeholders
)

// IDs lists every string id.
var IDs = []string{NewMessage, UnreadMessages, Conversations, DigestTitle, BodyPreview, BodyFrom, BodyGroupPreview, BodyGroupFrom, BodyHidden}

// LocKeyPrefix starts the localization key of each string id on devices
// (Android string resources and iOS Localizable.strings): nudge_new_message.
const LocKeyPrefix = "nudge_"

// DefaultLocale is the locale of last resort.
const DefaultLocale = "en"

// Conversation is one unread conversation a reminder tells of.
type Conversation struct {
	Sender  string // who wrote last, as the app names them
	Preview string // the last message's preview; may be empty
	Title   string // the conversation's title (a group); may be empty
	Unread  int64  // unread messages
}

// Style is how an app (and a user of it) wants reminders written.
type Style struct {
	// Locale is the device's BCP 47 tag (de-AT); empty: DefaultLocale.
	Locale string
	// DefaultLocale is the app's; empty: English.
	DefaultLocale string
	// Previews is PreviewsShow (default), PreviewsSender or PreviewsHidden.
	Previews string
	// Localize is LocalizeServer (default) or LocalizeDevice.
	Localize string
}

// Text is a reminder's text: Title and Body always (in the language Lang),
// and with LocalizeDevice the localization keys and arguments too.
type Text struct {
	Title, Body  string
	Lang         string
	TitleLocKey  string
	TitleLocArgs []string
	BodyLocKey   string
	BodyLocArgs  []string
}

// vars are the placeholders of every string. A struct, not a map: a
// misspelt placeholder fails to render instead of printing "<no value>".
type vars struct {
	Sender, Preview, Title  string
	Count                   int64
	Conversations, Messages string
}

// Catalog holds the built-in strings and every app's own. It is immutable
// once made, and safe for concurrent use.
type Catalog struct {
	builtin *i18n.Bundle
	apps    map[string]*i18n.Bundle

	mu         sync.Mutex
	localizers map[string][]*i18n.Localizer
}

// Builtin lists the locales with built-in strings.
func Builtin() []string {
	ents, _ := fs.ReadDir(locales, "locales")
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(out)
	return out
}

func builtinBundle() (*i18n.Bundle, error) {
	b := i18n.NewBundle(language.English)
	b.RegisterUnmarshalFunc("yaml", yaml.Unmarshal)
	ents, err := fs.ReadDir(locales, "locales")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		raw, err := locales.ReadFile(path.Join("locales", e.Name()))
		if err != nil {
			return nil, err
		}
		if _, err := b.ParseMessageFileBytes(raw, e.Name()); err != nil {
			return nil, fmt.Errorf("content: built-in %s: %w", e.Name(), err)
		}
	}
	return b, nil
}

// NewCatalog returns the built-in strings with each app's templates over
// them (apps: app name -> its templates). Every template is checked: an
// unknown string id, a bad locale or a template that does not render is an
// error naming the app, locale and id.
func NewCatalog(apps map[string]Templates) (*Catalog, error) {
	builtin, err := builtinBundle()
	if err != nil {
		return nil, err
	}
	c := &Catalog{builtin: builtin, apps: map[string]*i18n.Bundle{}, localizers: map[string][]*i18n.Localizer{}}
	known := map[string]bool{}
	for _, id := range IDs {
		known[id] = true
	}
	for app, locs := range apps {
		if len(locs) == 0 {
			continue
		}
		b, err := builtinBundle()
		if err != nil {
			return nil, err
		}
		for loc, strs := range locs {
			tag, err := language.Parse(loc)
			if err != nil {
				return nil, fmt.Errorf("content: app %s: locale %q: %w", app, loc, err)
			}
			for id, t := range strs {
				if !known[id] {
					return nil, fmt.Errorf("content: app %s, locale %s: unknown string %q (known: %s)", app, loc, id, strings.Join(IDs, ", "))
				}
				m := &i18n.Message{ID: id, Zero: t.Zero, One: t.One, Two: t.Two, Few: t.Few, Many: t.Many, Other: t.Other}
				if plural(id) {
					// A form the language needs and the template lacks
					// says what "other" says.
					for _, f := range []*string{&m.Zero, &m.One, &m.Two, &m.Few, &m.Many} {
						if *f == "" {
							*f = m.Other
						}
					}
				}
				if err := checkTemplate(tag, m); err != nil {
					return nil, fmt.Errorf("content: app %s, locale %s, string %s: %w", app, loc, id, err)
				}
				if err := b.AddMessages(tag, m); err != nil {
					return nil, fmt.Errorf("content: app %s, locale %s, string %s: %w", app, loc, id, err)
				}
			}
		}
		c.apps[app] = b
	}
	return c, nil
}

// plural reports whether a string has plural forms (chosen by .Count).
func plural(id string) bool { return id == UnreadMessages || id == Conversations }

// chain returns the localizers of app for a device locale, most
// specific first: the device's locale (de-AT finds de), the app's default
// locale, English. A string an app's language lacks (an app that added a
// language of its own for a few strings) comes from the next.
func (c *Catalog) chain(app string, st Style) []*i18n.Localizer {
	key := app + "\x00" + st.Locale + "\x00" + st.DefaultLocale
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.localizers[key]; ok {
		return l
	}
	b := c.apps[app]
	if b == nil {
		b = c.builtin
	}
	var prefs []string
	for _, s := range []string{st.Locale, st.DefaultLocale, DefaultLocale} {
		if s != "" {
			prefs = append(prefs, strings.ReplaceAll(s, "_", "-"))
		}
	}
	var chain []*i18n.Localizer
	for i := range prefs {
		chain = append(chain, i18n.NewLocalizer(b, prefs[i:]...))
	}
	if len(c.localizers) > 10000 { // locales come from devices: bound the cache
		clear(c.localizers)
	}
	c.localizers[key] = chain
	return chain
}

// Render writes the reminder of convs (the reminder's own conversation
// first, then those of a digest) for a device of app. On an error it
// returns the built-in English text, and the error.
func (c *Catalog) Render(app string, st Style, convs []Conversation) (Text, error) {
	if len(convs) == 0 {
		return Text{}, errors.New("content: no conversation")
	}
	t, err := c.render(c.chain(app, st), st, convs)
	if err != nil {
		fallback, ferr := c.render(c.chain("", Style{}), Style{Previews: st.Previews, Localize: st.Localize}, convs)
		if ferr != nil { // the built-in strings are tested: never
			return Text{Title: "New message", Body: "You have new messages", Lang: DefaultLocale}, errors.Join(err, ferr)
		}
		return fallback, fmt.Errorf("content: app %s, locale %q: %w", app, st.Locale, err)
	}
	return t, nil
}

func (c *Catalog) render(chain []*i18n.Localizer, st Style, convs []Conversation) (Text, error) {
	var (
		t    Text
		lang language.Tag
	)
	say := func(id string, count int64, v vars) (string, error) {
		lc := &i18n.LocalizeConfig{MessageID: id, TemplateData: v}
		if plural(id) {
			lc.PluralCount = count
		}
		var (
			s   string
			tag language.Tag
			err error
		)
		for _, l := range chain {
			s, tag, err = l.LocalizeWithTag(lc)
			var missing *i18n.MessageNotFoundErr
			if !errors.As(err, &missing) {
				break
			}
		}
		if err != nil {
			return "", fmt.Errorf("string %s: %w", id, err)
		}
		if lang == language.Und {
			lang = tag
		}
		return s, nil
	}
	var total int64
	for _, cv := range convs {
		total += cv.Unread
	}
	var err error
	if len(convs) == 1 {
		if total <= 1 {
			t.Title, err = say(NewMessage, 0, vars{})
			t.TitleLocKey = LocKeyPrefix + NewMessage
		} else {
			t.Title, err = say(UnreadMessages, total, vars{Count: total})
			t.TitleLocKey, t.TitleLocArgs = LocKeyPrefix+UnreadMessages, []string{strconv.FormatInt(total, 10)}
		}
	} else {
		n := int64(len(convs))
		var cs, ms string
		if cs, err = say(Conversations, n, vars{Count: n}); err == nil {
			if ms, err = say(UnreadMessages, total, vars{Count: total}); err == nil {
				t.Title, err = say(DigestTitle, 0, vars{Conversations: cs, Messages: ms})
			}
		}
		t.TitleLocKey, t.TitleLocArgs = LocKeyPrefix+DigestTitle, []string{strconv.FormatInt(n, 10), strconv.FormatInt(total, 10)}
	}
	if err != nil {
		return Text{}, err
	}
	lines := make([]string, 0, len(convs))
	for i, cv := range convs {
		id, args := bodyOf(cv, st.Previews)
		v := vars{Sender: cv.Sender, Preview: cv.Preview, Title: cv.Title}
		line, err := say(id, 0, v)
		if err != nil {
			return Text{}, err
		}
		if i == 0 {
			t.BodyLocKey, t.BodyLocArgs = LocKeyPrefix+id, args
		}
		if id == BodyHidden {
			lines = []string{line} // says it all, once
			break
		}
		lines = append(lines, line)
	}
	t.Body = strings.Join(lines, "\n")
	t.Lang = lang.String()
	if st.Localize != LocalizeDevice {
		t.TitleLocKey, t.TitleLocArgs, t.BodyLocKey, t.BodyLocArgs = "", nil, "", nil
	}
	return t, nil
}

// bodyOf picks the body string of one conversation and its localization
// arguments, in the order of the string's placeholders.
func bodyOf(cv Conversation, previews string) (string, []string) {
	switch {
	case previews == PreviewsHidden || cv.Sender == "":
		return BodyHidden, nil
	case previews != PreviewsSender && cv.Preview != "" && cv.Title != "":
		return BodyGroupPreview, []string{cv.Sender, cv.Title, cv.Preview}
	case previews != PreviewsSender && cv.Preview != "":
		return BodyPreview, []string{cv.Sender, cv.Preview}
	case cv.Title != "":
		return BodyGroupFrom, []string{cv.Sender, cv.Title}
	}
	return BodyFrom, []string{cv.Sender}
}

// CheckStyle reports whether the previews and localize values of st are
// known ("" is the default).
func CheckStyle(st Style) error {
	switch st.Previews {
	case "", PreviewsShow, PreviewsSender, PreviewsHidden:
	default:
		return fmt.Errorf("previews %q: want %s, %s or %s", st.Previews, PreviewsShow, PreviewsSender, PreviewsHidden)
	}
	switch st.Localize {
	case "", LocalizeServer, LocalizeDevice:
	default:
		return fmt.Errorf("localize %q: want %s or %s", st.Localize, LocalizeServer, LocalizeDevice)
	}
	if st.DefaultLocale != "" {
		if _, err := language.Parse(st.DefaultLocale); err != nil {
			return fmt.Errorf("locale %q: %w", st.DefaultLocale, err)
		}
	}
	return nil
}
