package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/protocol"
	"github.com/parleychat/parley/internal/store"
	"github.com/parleychat/parley/internal/store/storetest"
)

// TestMemory runs the conformance suite against the in-memory store.
func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T, ret store.Retention, now func() time.Time) store.Store {
		return store.NewMemory(ret, now)
	})
}

// TestMemoryMaxLenExact: unlike Redis, which trims whole stream nodes, the
// memory store keeps exactly MaxLen messages, so its tighter promise is
// checked here rather than in the shared suite.
func TestMemoryMaxLenExact(t *testing.T) {
	s := store.NewMemory(store.Retention{MaxLen: 5}, nil)
	for i := range 12 {
		if _, _, err := s.Append(t.Context(), protocol.Message{Room: "r", Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.After(t.Context(), "r", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != 5 || p.Messages[0].Seq != 8 || p.Seq != 12 {
		t.Errorf("kept %d messages from seq %d (room seq %d), want 5 from 8 (12)", len(p.Messages), p.Messages[0].Seq, p.Seq)
	}
}

// BenchmarkMemory runs the shared store benchmarks against the memory store.
func BenchmarkMemory(b *testing.B) {
	storetest.Benchmark(b, func(*testing.B) store.Store { return store.NewMemory(store.Retention{}, nil) })
}
