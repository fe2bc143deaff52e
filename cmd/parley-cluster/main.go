// Command parley-cluster runs Parley scaled out on this machine, without
// Docker: N gateways on the machine's RabbitMQ and Redis, behind nginx with
// the docker compose configuration (see internal/cluster). It prints where
// everything is and runs until Ctrl-C, then stops it all.
//
//	go run ./cmd/parley-cluster -gateways 3 -port 8080
//
// The gateways get PARLEY_AMQP_URL and PARLEY_REDIS_URL from the environment
// (default: the local services) and every other PARLEY_* variable set in it,
// e.g. PARLEY_SEND_RATE=100 go run ./cmd/parley-cluster.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "parley-cluster:", err)
		os.Exit(1)
	}
}
