package broker_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parleychat/parley/internal/broker"
	"github.com/parleychat/parley/internal/broker/brokertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestMemory runs the conformance suite on the in-process broker: both
// "gateways" are the same Memory, as in the embedded default.
func TestMemory(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) (a, b broker.Broker) {
		m := &broker.Memory{}
		t.Cleanup(func() {
			if err := m.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return m, m
	})
}
