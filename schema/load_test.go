package schema

import (
	"errors"
	"testing"
	"testing/fstest"
)

func TestEmbeddedMigrations(t *testing.T) {
	t.Parallel()
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"counters", "registry"}
	if len(ms) < len(want) {
		t.Fatalf("got %d migrations, want at least %d", len(ms), len(want))
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Errorf("migration %d has version %d: versions must be contiguous from 1", i, m.Version)
		}
		if i < len(want) && m.Name != want[i] {
			t.Errorf("migration %d is %q, want %q", m.Version, m.Name, want[i])
		}
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	t.Parallel()
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name  string
		files fstest.MapFS
	}{
		{"bad name", fstest.MapFS{"migrations/1_x.up.sql": file("x"), "migrations/1_x.down.sql": file("x")}},
		{"up without down", fstest.MapFS{"migrations/0001_x.up.sql": file("x")}},
		{"empty down", fstest.MapFS{"migrations/0001_x.up.sql": file("x"), "migrations/0001_x.down.sql": file("")}},
		{"two names", fstest.MapFS{"migrations/0001_x.up.sql": file("x"), "migrations/0001_y.down.sql": file("x")}},
		{"version zero", fstest.MapFS{"migrations/0000_x.up.sql": file("x"), "migrations/0000_x.down.sql": file("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := load(tt.files); !errors.Is(err, ErrBadMigrations) {
				t.Fatalf("load = %v, want ErrBadMigrations", err)
			}
		})
	}
	ok := fstest.MapFS{
		"migrations/0002_b.up.sql": file("b"), "migrations/0002_b.down.sql": file("-b"),
		"migrations/0001_a.up.sql": file("a"), "migrations/0001_a.down.sql": file("-a"),
	}
	ms, err := load(ok)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "a" || ms[1].Down != "-b" {
		t.Fatalf("load = %+v", ms)
	}
}
