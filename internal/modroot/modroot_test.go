package modroot_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nudgehq/nudge/internal/modroot"
)

func TestDirFromAPackage(t *testing.T) {
	dir, err := modroot.Dir()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "module github.com/nudgehq/nudge\n"; len(mod) < len(want) || string(mod[:len(want)]) != want {
		t.Errorf("%s/go.mod starts %q, want %q", dir, mod[:min(len(mod), 40)], want)
	}
}

func TestDirOutsideTheModule(t *testing.T) {
	t.Chdir(t.TempDir())
	if dir, err := modroot.Dir(); err == nil {
		t.Errorf("Dir() = %s outside the module, want an error", dir)
	}
}
