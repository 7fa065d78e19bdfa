package buildtest

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Main is the TestMain of a package whose tests build commands: it runs
// the tests, removes the binaries and exits with the tests' status.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// MainVerifyingLeaks is Main that also fails a passing run which left
// goroutines running (goleak), as goleak.VerifyTestMain does for packages
// that build nothing.
func MainVerifyingLeaks(m *testing.M) {
	code := m.Run()
	Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
