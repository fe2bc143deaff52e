//go:build integration

package amqpbroker

import (
	"context"
	"sync/atomic"
	"testing"
)

// benchBody is the size and shape of a typical chat message frame.
var benchBody = []byte(`{"type":"message","room":"general","epoch":"4k2j9x0c1b5qa","seq":58,"id":"01jq3n9c4k0f3m6t2b7x5d8e1a","user":{"id":"g_0q3v5m2k8d1c7b9a","name":"alice"},"text":"hello, this is a chat message of ordinary length","ts":"2026-11-28T19:20:01.123Z","client_msg_id":"c-17"}`)

// countHandler counts deliveries; it stands for a gateway's hub.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) Deliver([]byte) { h.n.Add(1) }
func (h *countHandler) LinkUp()        {}
func (h *countHandler) LinkDown(error) {}

// BenchmarkPublish measures confirmed publishes with many in flight at once,
// as a gateway with many senders makes them. A second Broker consumes the
// exchange, so that every body is routed to a queue as in production.
func BenchmarkPublish(b *testing.B) {
	pub := benchSetup(b)
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := pub.Publish(context.Background(), benchBody, "01jq3n9c4k0f3m6t2b7x5d8e1a"); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkPublishSerial measures one publish at a time, each waiting for
// its confirm: the latency of a single send.
func BenchmarkPublishSerial(b *testing.B) {
	pub := benchSetup(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := pub.Publish(context.Background(), benchBody, "01jq3n9c4k0f3m6t2b7x5d8e1a"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

// benchSetup returns a publishing Broker whose publish link is up, on an
// exchange that a second Broker consumes.
func benchSetup(b *testing.B) *Broker {
	b.Helper()
	ex := newTestExchange(b)
	pub := newTestBroker(b, ex, Config{})
	con := newTestBroker(b, ex, Config{})
	h := &countHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- con.Consume(ctx, h) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Consume = %v", err)
		}
	})
	waitReady(b, con.Broker)
	waitPublishLink(b, pub.Broker)
	return pub.Broker
}
