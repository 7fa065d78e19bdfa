package loadgen_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: Run's
// progress goroutine and the Redis clients (closed in t.Cleanup) must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
