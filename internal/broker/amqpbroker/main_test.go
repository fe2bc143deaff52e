package amqpbroker

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every
// supervisor, consumer and library goroutine must end with Close or with
// Consume's context.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
