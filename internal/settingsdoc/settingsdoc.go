// Package settingsdoc checks docs/settings.md, the table of every setting
// of every command, against the commands' flag sets: each command's test
// calls Check with the FlagSet its main builds, so a flag added, removed,
// renamed or given another default fails the test until the table says so.
package settingsdoc

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Row is one setting of the table.
type Row struct {
	Command string // "ingest", "report serve"
	Flag    string // without the dash
	Env     string // "" when the flag has no environment variable
	Default string
	Meaning string
}

// Path returns the path of docs/settings.md, found from the working
// directory upwards (the directory with go.mod).
func Path() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "docs", "settings.md"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("settingsdoc: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Read parses the rows of the table under the header "| command | flag |"
// in the file at path: lines
// "| `command` | `-flag` | `NUDGE_X` or — | `default` or empty | meaning |".
func Read(path string) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []Row
	in := false // in the table of settings
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "| command | flag |") {
			in = true
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 5 {
			return nil, fmt.Errorf("%s:%d: want 5 cells, got %d", path, n, len(cells))
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		env := unquote(cells[2])
		if env == "—" {
			env = ""
		}
		rows = append(rows, Row{Command: unquote(cells[0]), Flag: strings.TrimPrefix(unquote(cells[1]), "-"),
			Env: env, Default: unquote(cells[3]), Meaning: cells[4]})
	}
	return rows, sc.Err()
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '`' && s[len(s)-1] == '`' {
		return s[1 : len(s)-1]
	}
	return s
}

// Check fails t unless the rows of command in docs/settings.md are exactly
// the flags of fs, with their defaults, their usage as the meaning, and
// env(flag) as their environment variable (env nil: no flag has one; env
// returning "": this one has none).
func Check(t testing.TB, command string, fs *flag.FlagSet, env func(flagName string) string) {
	t.Helper()
	path, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]Row{}
	for _, r := range rows {
		if r.Command == command {
			doc[r.Flag] = r
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		r, ok := doc[f.Name]
		want := Row{Command: command, Flag: f.Name, Default: f.DefValue}
		if env != nil {
			want.Env = env(f.Name)
		}
		switch {
		case !ok:
			t.Errorf("docs/settings.md: no row for %s -%s; add:\n%s", command, f.Name, Format(want, f.Usage))
		case r.Env != want.Env || r.Default != want.Default || r.Meaning != meaning(f.Usage):
			t.Errorf("docs/settings.md: the row of %s -%s is not the command's flag; replace it with:\n%s", command, f.Name, Format(want, f.Usage))
		}
		delete(doc, f.Name)
	})
	for name := range doc {
		t.Errorf("docs/settings.md: %s has no flag -%s; remove its row", command, name)
	}
}

// meaning is a flag's usage as a table cell shows it.
func meaning(usage string) string { return strings.ReplaceAll(usage, "|", "\\|") }

// Format renders a row of the table.
func Format(r Row, meaning string) string {
	env := "—"
	if r.Env != "" {
		env = "`" + r.Env + "`"
	}
	def := ""
	if r.Default != "" {
		def = "`" + r.Default + "`"
	}
	return fmt.Sprintf("| `%s` | `-%s` | %s | %s | %s |", r.Command, r.Flag, env, def, strings.ReplaceAll(meaning, "|", "\\|"))
}
