package redispresence

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a Store
// that is closed must leave nothing running (pool reapers, dialers, the
// refreshers tests start).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
