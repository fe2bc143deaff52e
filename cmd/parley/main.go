// Command parley runs a Parley chat gateway. Configuration comes from the
// environment (see README.md); with none, it runs everything in one process:
// open http://localhost:8080.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
}
