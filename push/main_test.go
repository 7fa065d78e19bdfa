package push_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind. No goroutine needs to be
// ignored: the senders close their HTTP/1 and HTTP/2 connection pools (Close, in t.Cleanup),
// the sandboxes close their listeners and connections, and goleak waits for the connection
// goroutines to notice.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
