package loadgen

import (
	"bytes"
	"os"
	"slices"
	"testing"
)

// FindProcs is how parley-bench finds RabbitMQ and Redis; this test process
// must be found by its own command name, and not by another.
func TestFindProcsFindsThisProcessByName(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	pids, err := FindProcs(string(bytes.TrimSpace(comm)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, os.Getpid()) {
		t.Errorf("FindProcs(%q) = %v, want it to include this process %d", bytes.TrimSpace(comm), pids, os.Getpid())
	}
	if pids, err := FindProcs("no-such-command-here"); err != nil || len(pids) > 0 {
		t.Errorf("FindProcs of an unknown name = %v, %v; want none", pids, err)
	}
}
