// Package settingsdoc checks docs/settings.md, the table of every setting
// of every command, against what each command's -h prints (e2e:
// TestSettingsDoc), so a flag added, removed, renamed, given another
// default or another meaning fails the test until the table says so.
package settingsdoc

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nudgehq/nudge/internal/modroot"
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
	dir, err := modroot.Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "docs", "settings.md"), nil
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

// Help reads the settings a command's -h printed (flagenv.FlagSet.PrintSettings):
// a line "  -flag  (NUDGE_X, default "v")" or "  -flag  (default "v")" per
// flag, its meaning on the next line.
func Help(command, out string) ([]Row, error) {
	var rows []Row
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		m := helpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		def, err := strconv.Unquote(m[3])
		if err != nil {
			return nil, fmt.Errorf("%s -h: default of -%s: %w", command, m[1], err)
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "      ") {
			return nil, fmt.Errorf("%s -h: no meaning under -%s", command, m[1])
		}
		rows = append(rows, Row{Command: command, Flag: m[1], Env: m[2], Default: def,
			Meaning: meaning(strings.TrimPrefix(lines[i+1], "      "))})
	}
	return rows, nil
}

var helpLine = regexp.MustCompile(`^  -(\S+)  \((?:(\S+), )?default (".*")\)$`)

// Diff compares the settings a command has (got, from its -h) with the
// rows of that command in the table (doc), and returns a message for each
// row to add, replace or remove, with the row to write.
func Diff(command string, got, doc []Row) []string {
	rows := map[string]Row{}
	for _, r := range doc {
		if r.Command == command {
			rows[r.Flag] = r
		}
	}
	var out []string
	for _, g := range got {
		r, ok := rows[g.Flag]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("docs/settings.md: no row for %s -%s; add:\n%s", command, g.Flag, Format(g)))
		case r != g:
			out = append(out, fmt.Sprintf("docs/settings.md: the row of %s -%s is not the command's flag; replace it with:\n%s", command, g.Flag, Format(g)))
		}
		delete(rows, g.Flag)
	}
	for _, name := range slices.Sorted(maps.Keys(rows)) {
		out = append(out, fmt.Sprintf("docs/settings.md: %s has no flag -%s; remove its row", command, name))
	}
	return out
}

// meaning is a flag's usage as a table cell shows it.
func meaning(usage string) string { return strings.ReplaceAll(usage, "|", "\\|") }

// Format renders a row of the table.
func Format(r Row) string {
	env := "—"
	if r.Env != "" {
		env = "`" + r.Env + "`"
	}
	def := ""
	if r.Default != "" {
		def = "`" + r.Default + "`"
	}
	return fmt.Sprintf("| `%s` | `-%s` | %s | %s | %s |", r.Command, r.Flag, env, def, r.Meaning)
}
