package content_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/content"
)

func catalog(t *testing.T, apps map[string]content.Templates) *content.Catalog {
	t.Helper()
	c, err := content.NewCatalog(apps)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func one(sender, preview string, unread int64) []content.Conversation {
	return []content.Conversation{{Sender: sender, Preview: preview, Unread: unread}}
}

// Every built-in language has every string, in its own language (no
// string falls back to English), and the required ones are there.
func TestBuiltinLanguagesAreComplete(t *testing.T) {
	t.Parallel()
	got := content.Builtin()
	for _, want := range []string{"de", "en", "es", "fr", "ja", "pl", "pt-BR", "ru"} {
		if !slices.Contains(got, want) {
			t.Errorf("no built-in %s (have %v)", want, got)
		}
	}
	c := catalog(t, nil)
	english := map[string]bool{}
	en, _ := c.Render("a", content.Style{Locale: "en"}, []content.Conversation{
		{Sender: "Alice", Preview: "Hi", Title: "Team", Unread: 2}, {Sender: "Bob", Unread: 1}})
	english[en.Title], english[en.Body] = true, true
	for _, loc := range got {
		for _, convs := range [][]content.Conversation{
			one("Alice", "Hi", 1), one("Alice", "Hi", 3), one("Alice", "", 1),
			{{Sender: "Alice", Preview: "Hi", Title: "Team", Unread: 2}, {Sender: "Bob", Title: "Ops", Unread: 1}},
		} {
			for _, previews := range []string{content.PreviewsShow, content.PreviewsSender, content.PreviewsHidden} {
				txt, err := c.Render("a", content.Style{Locale: loc, Previews: previews}, convs)
				if err != nil {
					t.Errorf("%s: %v", loc, err)
					continue
				}
				if txt.Lang != loc {
					t.Errorf("%s rendered in %s: a string is missing (%q / %q)", loc, txt.Lang, txt.Title, txt.Body)
				}
				if txt.Title == "" || txt.Body == "" || strings.Contains(txt.Title+txt.Body, "{{") || strings.Contains(txt.Title+txt.Body, "no value") {
					t.Errorf("%s: title %q body %q", loc, txt.Title, txt.Body)
				}
				if loc != "en" && (english[txt.Title] || english[txt.Body]) {
					t.Errorf("%s: English text %q / %q", loc, txt.Title, txt.Body)
				}
			}
		}
	}
}

// A locale falls back from the specific to the general, then to the
// app's default, then to English.
func TestLocaleFallback(t *testing.T) {
	t.Parallel()
	c := catalog(t, nil)
	for _, tc := range []struct {
		locale, appDefault, lang, title string
	}{
		{"de-AT", "", "de", "Neue Nachricht"},
		{"de_CH", "", "de", "Neue Nachricht"},
		{"ja-JP", "", "ja", "新着メッセージ"},
		{"pt-BR", "", "pt-BR", "Nova mensagem"},
		{"pl-PL", "", "pl", "Nowa wiadomość"},
		{"xx-YY", "fr", "fr", "Nouveau message"},
		{"", "es", "es", "Mensaje nuevo"},
		{"xx-YY", "", "en", "New message"},
		{"not a tag!", "", "en", "New message"},
		{"", "", "en", "New message"},
	} {
		txt, err := c.Render("a", content.Style{Locale: tc.locale, DefaultLocale: tc.appDefault}, one("Alice", "Hi", 1))
		if err != nil {
			t.Errorf("%q: %v", tc.locale, err)
			continue
		}
		if txt.Lang != tc.lang || txt.Title != tc.title {
			t.Errorf("locale %q, app default %q: %s %q, want %s %q", tc.locale, tc.appDefault, txt.Lang, txt.Title, tc.lang, tc.title)
		}
	}
}

// Plural forms follow CLDR: Polish and Russian have more than two.
func TestPluralForms(t *testing.T) {
	t.Parallel()
	c := catalog(t, nil)
	for _, tc := range []struct {
		locale string
		n      int64
		title  string
	}{
		{"en", 1, "New message"},
		{"en", 2, "2 unread messages"},
		{"pl", 2, "2 nieprzeczytane wiadomości"},
		{"pl", 5, "5 nieprzeczytanych wiadomości"},
		{"pl", 22, "22 nieprzeczytane wiadomości"},
		{"pl", 12, "12 nieprzeczytanych wiadomości"},
		{"ru", 21, "21 непрочитанное сообщение"},
		{"ru", 3, "3 непрочитанных сообщения"},
		{"ru", 11, "11 непрочитанных сообщений"},
		{"fr", 2, "2 messages non lus"},
		{"ja", 7, "未読メッセージ7件"},
	} {
		txt, err := c.Render("a", content.Style{Locale: tc.locale}, one("Alice", "Hi", tc.n))
		if err != nil || txt.Title != tc.title {
			t.Errorf("%s, %d unread: %q (%v), want %q", tc.locale, tc.n, txt.Title, err, tc.title)
		}
	}
	txt, _ := c.Render("a", content.Style{Locale: "pl"}, []content.Conversation{
		{Sender: "Ala", Preview: "Cześć", Unread: 3}, {Sender: "Olek", Preview: "Hej", Unread: 2}})
	if txt.Title != "2 rozmowy, 5 nieprzeczytanych wiadomości" || txt.Body != "Ala: Cześć\nOlek: Hej" {
		t.Errorf("Polish digest %q / %q", txt.Title, txt.Body)
	}
}

// Previews show the message, only the sender, or nothing; a group's title
// names the conversation.
func TestPreviews(t *testing.T) {
	t.Parallel()
	c := catalog(t, nil)
	group := []content.Conversation{{Sender: "Alice", Preview: "Lunch?", Title: "Team chat", Unread: 1}}
	for _, tc := range []struct {
		previews string
		convs    []content.Conversation
		body     string
	}{
		{content.PreviewsShow, one("Alice", "Lunch?", 1), "Alice: Lunch?"},
		{"", group, "Alice in Team chat: Lunch?"},
		{content.PreviewsSender, one("Alice", "Lunch?", 1), "New message from Alice"},
		{content.PreviewsSender, group, "New message from Alice in Team chat"},
		{content.PreviewsHidden, group, "You have new messages"},
		{content.PreviewsHidden, append(group, one("Bob", "x", 1)...), "You have new messages"},
	} {
		txt, err := c.Render("a", content.Style{Previews: tc.previews}, tc.convs)
		if err != nil || txt.Body != tc.body {
			t.Errorf("previews %q: body %q (%v), want %q", tc.previews, txt.Body, err, tc.body)
		}
		if tc.previews == content.PreviewsHidden && strings.Contains(txt.Title+txt.Body, "Lunch") {
			t.Errorf("hidden previews show the message: %+v", txt)
		}
	}
}

// Apps that localize on the device get keys and arguments beside the text.
func TestDeviceLocalization(t *testing.T) {
	t.Parallel()
	c := catalog(t, nil)
	txt, err := c.Render("a", content.Style{Localize: content.LocalizeDevice, Locale: "de"},
		[]content.Conversation{{Sender: "Alice", Preview: "Lunch?", Title: "Team", Unread: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if txt.TitleLocKey != "nudge_unread_messages" || !slices.Equal(txt.TitleLocArgs, []string{"3"}) ||
		txt.BodyLocKey != "nudge_body_group_preview" || !slices.Equal(txt.BodyLocArgs, []string{"Alice", "Team", "Lunch?"}) {
		t.Errorf("keys %+v", txt)
	}
	if txt.Title != "3 ungelesene Nachrichten" {
		t.Errorf("the text beside the keys is %q", txt.Title)
	}
	txt, _ = c.Render("a", content.Style{}, one("Alice", "Lunch?", 3))
	if txt.TitleLocKey != "" || txt.BodyLocKey != "" || txt.TitleLocArgs != nil {
		t.Errorf("server-localized text carries keys: %+v", txt)
	}
}

// An app's templates override built-in strings for that app only; a bad
// template is refused when the catalog is made, naming it.
func TestAppTemplates(t *testing.T) {
	t.Parallel()
	c := catalog(t, map[string]content.Templates{"shop": {
		"de": {"new_message": {Other: "Neue Nachricht im Shop"}},
		"pl": {"unread_messages": {One: "{{.Count}} wiadomość", Few: "{{.Count}} wiadomości!", Many: "{{.Count}} wiadomości!!", Other: "{{.Count}} wiadomości?"}},
		"ko": {"new_message": {Other: "새 메시지"}},
	}})
	for _, tc := range []struct {
		app, locale string
		n           int64
		title       string
	}{
		{"shop", "de-DE", 1, "Neue Nachricht im Shop"},
		{"chat", "de-DE", 1, "Neue Nachricht"},
		{"shop", "de-DE", 2, "2 ungelesene Nachrichten"}, // not overridden: built-in
		{"shop", "pl", 3, "3 wiadomości!"},
		{"shop", "pl", 5, "5 wiadomości!!"},
		{"shop", "ko-KR", 1, "새 메시지"}, // a language added by the app
		{"chat", "ko-KR", 1, "New message"},
	} {
		txt, err := c.Render(tc.app, content.Style{Locale: tc.locale}, one("A", "B", tc.n))
		if err != nil || txt.Title != tc.title {
			t.Errorf("app %s, %s, %d: %q (%v), want %q", tc.app, tc.locale, tc.n, txt.Title, err, tc.title)
		}
	}
	for name, bad := range map[string]content.Templates{
		"unknown placeholder": {"en": {"body_from": {Other: "From {{.Nobody}}"}}},
		"broken template":     {"en": {"body_from": {Other: "From {{.Sender"}}},
		"unknown string":      {"en": {"greeting": {Other: "Hi"}}},
		"bad locale":          {"not a locale!": {"new_message": {Other: "x"}}},
	} {
		if _, err := content.NewCatalog(map[string]content.Templates{"shop": bad}); err == nil || !strings.Contains(err.Error(), "shop") {
			t.Errorf("%s: error %v, want one naming the app", name, err)
		}
	}
}

// A template that fails while rendering (not when checked) sends the
// built-in English text, and says so.
func TestFailingTemplateFallsBackToEnglish(t *testing.T) {
	t.Parallel()
	c := catalog(t, map[string]content.Templates{"shop": {
		"de": {"unread_messages": {Other: "{{if eq .Count 7}}{{index .Sender 99}}{{end}}{{.Count}} neu"}},
	}})
	txt, err := c.Render("shop", content.Style{Locale: "de"}, one("Alice", "Hi", 7))
	if err == nil {
		t.Fatal("no error from a template that failed")
	}
	if txt.Title != "7 unread messages" || txt.Body != "Alice: Hi" || txt.Lang != "en" {
		t.Errorf("fallback %+v", txt)
	}
	if txt, err := c.Render("shop", content.Style{Locale: "de"}, one("Alice", "Hi", 3)); err != nil || txt.Title != "3 neu" {
		t.Errorf("%q (%v)", txt.Title, err)
	}
}

func TestCheckStyle(t *testing.T) {
	t.Parallel()
	for _, st := range []content.Style{{Previews: "all"}, {Localize: "client"}, {DefaultLocale: "not a locale!"}} {
		if content.CheckStyle(st) == nil {
			t.Errorf("%+v accepted", st)
		}
	}
	if err := content.CheckStyle(content.Style{Previews: "hidden", Localize: "device", DefaultLocale: "pt-BR"}); err != nil {
		t.Error(err)
	}
}
