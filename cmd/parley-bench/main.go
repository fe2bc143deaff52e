// Command parley-bench is Parley's load generator and benchmark runner. It
// opens many WebSocket clients against gateways (given with -urls, or
// started on this machine with -cluster N on the local RabbitMQ and Redis),
// joins them to rooms, has some publish at a fixed rate, and reports
// delivery, latency, frames and the gateways' CPU and memory: a live line a
// second, a summary table and a JSON line per run, and medians over runs.
//
//	go run ./cmd/parley-bench -cluster 2 -workload W1 -repeat 3
//	go run ./cmd/parley-bench -urls http://127.0.0.1:8081,http://127.0.0.1:8082 -pids 123,456 -workload W3
//
// See docs/benchmarks.md for the workloads and results, and
// scripts/bench.sh for the usual way to run them.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "parley-bench:", err)
		os.Exit(1)
	}
}
