package content

// Apps' templates: read from the apps file, checked against the built-in
// messages' placeholders and plural forms.

import (
	"fmt"

	"github.com/nicksnyder/go-i18n/v2/i18n"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
)

// Template is one string of an app's own: a text, or (for a plural
// string) its CLDR plural forms. In YAML, a plain string or a map with
// keys zero, one, two, few, many, other.
type Template struct {
	Zero, One, Two, Few, Many, Other string
}

// UnmarshalYAML reads a plain string or a map of plural forms.
func (t *Template) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		t.Other = n.Value
		return nil
	}
	var forms map[string]string
	if err := n.Decode(&forms); err != nil {
		return err
	}
	for k, v := range forms {
		switch k {
		case "zero":
			t.Zero = v
		case "one":
			t.One = v
		case "two":
			t.Two = v
		case "few":
			t.Few = v
		case "many":
			t.Many = v
		case "other":
			t.Other = v
		default:
			return fmt.Errorf("line %d: plural form %q: want zero, one, two, few, many or other", n.Line, k)
		}
	}
	if t.Other == "" {
		return fmt.Errorf("line %d: a plural string needs its \"other\" form", n.Line)
	}
	return nil
}

// Templates are an app's own strings: locale -> string id -> template.
type Templates map[string]map[string]Template

// checkTemplate renders every form of m with sample values.
func checkTemplate(tag language.Tag, m *i18n.Message) error {
	b := i18n.NewBundle(tag)
	if err := b.AddMessages(tag, m); err != nil {
		return err
	}
	l := i18n.NewLocalizer(b, tag.String())
	for _, n := range []int64{0, 1, 2, 3, 5, 11, 21, 22, 25, 101, 1000000} {
		lc := &i18n.LocalizeConfig{MessageID: m.ID,
			TemplateData: vars{Sender: "Alice", Preview: "Hi", Title: "Team", Count: n, Conversations: "2", Messages: "3"}}
		if plural(m.ID) {
			lc.PluralCount = n
		}
		if _, err := l.Localize(lc); err != nil {
			return err
		}
	}
	return nil
}
