// Package modroot finds the root of the Nudge module (the directory with
// go.mod) from a test's working directory, for the test helpers that run
// the repository's scripts or read its docs.
package modroot

import (
	"errors"
	"os"
	"path/filepath"
)

// Dir returns the nearest directory up from the working directory that
// holds go.mod.
func Dir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("modroot: no go.mod above the working directory")
		}
		dir = parent
	}
}
