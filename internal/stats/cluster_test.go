package stats

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/broker"
	"github.com/parleychat/parley/internal/hub"
	"github.com/parleychat/parley/internal/store"
)

// TestTwoGatewaysOnOneBroker wires two gateways' statistics as the gateway
// binary does: each Collector publishes through the broker, each gateway's
// hub hands "stats" bodies to its Aggregator. Both aggregators must come to
// show both gateways, with exactly the counters each counted itself.
func TestTwoGatewaysOnOneBroker(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	mem := &broker.Memory{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	const interval = 20 * time.Millisecond
	ids := []string{"gw-1", "gw-2"}
	collectors := make([]*Collector, len(ids))
	aggregators := make([]*Aggregator, len(ids))
	for i, id := range ids {
		agg := NewAggregator(AggregatorConfig{Gateway: id, Interval: interval, Logger: log})
		h := hub.New(hub.Config{OnBody: agg.HandleBody}, store.NewMemory(store.Retention{}, nil), log)
		wg.Go(func() {
			if err := mem.Consume(ctx, h); err != nil {
				t.Errorf("consume: %v", err)
			}
		})
		c := NewCollector(CollectorConfig{
			Gateway: id, Interval: interval, Logger: log,
			Connections: func() int { return 10 * (i + 1) },
			Rooms:       func() int { return i + 1 },
			Publish:     func(ctx context.Context, body []byte) error { return mem.Publish(ctx, body, "") },
		})
		wg.Go(func() { c.Run(ctx) })
		collectors[i], aggregators[i] = c, agg
	}

	// Traffic on both, from many goroutines, while reports flow.
	var traffic sync.WaitGroup
	for i, c := range collectors {
		for w := range 4 {
			traffic.Go(func() {
				for n := range 200 * (i + 1) {
					c.Sent(fmt.Sprintf("room-%d", (w+n)%3))
					c.Delivered(3)
					c.Latency([]float64{float64(n % 40)}, nil)
					if n%50 == 0 {
						time.Sleep(time.Millisecond) // let a few reports go out meanwhile
					}
				}
			})
		}
	}
	traffic.Wait()

	wantSent := []uint64{collectors[0].sent.Load(), collectors[1].sent.Load()}
	if wantSent[0] != 800 || wantSent[1] != 1600 {
		t.Fatalf("collectors counted %v, want [800 1600]", wantSent)
	}
	agree := func(s Snapshot) error {
		if len(s.Gateways) != 2 {
			return fmt.Errorf("%d gateways", len(s.Gateways))
		}
		var sum uint64
		for i, r := range s.Gateways {
			if r.ID != ids[i] || r.Sent != wantSent[i] || r.Delivered != 3*wantSent[i] || r.Connections != 10*(i+1) {
				return fmt.Errorf("row %+v", r)
			}
			sum += r.Sent
		}
		if s.Totals.Sent != sum || s.Totals.Delivered != 3*sum || s.Totals.Connections != 30 || s.Totals.LocalRooms != 3 {
			return fmt.Errorf("totals %+v", s.Totals)
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for i, agg := range aggregators {
		for {
			err := agree(agg.Snapshot())
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("aggregator of %s never agreed with the collectors: %v", ids[i], err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Every step's rate adds up to what was sent, give or take the steps
	// still being reported.
	s := aggregators[0].Snapshot()
	var total float64
	for _, v := range s.Rate.SentPerSec {
		total += v * interval.Seconds()
	}
	if total > float64(wantSent[0]+wantSent[1])+1 {
		t.Errorf("rate history adds up to %.1f messages, more than the %d sent", total, wantSent[0]+wantSent[1])
	}
}
