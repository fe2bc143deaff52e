package cluster_test

import (
	"maps"
	"testing"

	"github.com/parleychat/parley/internal/cluster"
)

// TestPassedOn: our settings reach the gateways; what the cluster decides
// (addresses, ids, services, namespace) and what is not Parley's does not.
func TestPassedOn(t *testing.T) {
	ours := map[string]string{
		"PARLEY_SEND_RATE":     "50",
		"PARLEY_WRITE_DELAY":   "2ms",
		"PARLEY_ADDR":          ":9999",
		"PARLEY_GATEWAY_ID":    "mine",
		"PARLEY_AMQP_URL":      "amqp://elsewhere",
		"PARLEY_REDIS_URL":     "redis://elsewhere",
		"PARLEY_AMQP_EXCHANGE": "mine",
		"PARLEY_REDIS_PREFIX":  "mine:",
		"PARLEY_NOT_A_SETTING": "x",
		"HOME":                 "/root",
	}
	got := cluster.PassedOn(func(k string) string { return ours[k] })
	want := map[string]string{"PARLEY_SEND_RATE": "50", "PARLEY_WRITE_DELAY": "2ms"}
	if !maps.Equal(got, want) {
		t.Errorf("PassedOn = %v, want %v", got, want)
	}
}
