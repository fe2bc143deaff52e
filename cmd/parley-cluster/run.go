package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/parleychat/parley/internal/cluster"
)

// run parses the flags, starts the cluster, prints it, and stops it when ctx
// ends or SIGINT/SIGTERM arrives. getenv supplies the PARLEY_* variables
// passed on to the gateways.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	gateways := fs.Int("gateways", 3, "number of gateways")
	port := fs.Int("port", 8080, "port of the load balancer (nginx) on 127.0.0.1; 0 picks a free one")
	dir := fs.String("dir", ".cluster", "directory for the binary, the logs and nginx's files (kept after exit)")
	binary := fs.String("binary", "", "parley binary to run (default: build ./cmd/parley)")
	race := fs.Bool("race", false, "build the gateways with the race detector")
	namespace := fs.String("namespace", "local",
		`names the exchange ("parley.<ns>") and the Redis prefix ("parley:<ns>:"): the same name keeps the history across runs, "" is a fresh random one`)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [flags]\n\nRuns N Parley gateways behind nginx on this machine, until Ctrl-C.\n\n", args[0])
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *gateways < 1 {
		return fmt.Errorf("-gateways %d: want at least 1", *gateways)
	}
	if *port < 0 || *port > 65535 {
		return fmt.Errorf("-port %d: not a port", *port)
	}

	opts := cluster.Options{
		Gateways:  *gateways,
		Binary:    *binary,
		Race:      *race,
		AMQPURL:   getenv("PARLEY_AMQP_URL"),
		RedisURL:  getenv("PARLEY_REDIS_URL"),
		Namespace: *namespace,
		Env:       cluster.PassedOn(getenv),
		Port:      *port,
		Dir:       *dir,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(stderr, format+"\n", args...)
		},
	}
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Parley: %s  (nginx pid %d, logs in %s)\n", c.URL(), c.NginxPID(), c.Dir())
	for i := range c.Len() {
		fmt.Fprintf(stdout, "  %s  pid %-7d %s  log %s\n", c.GatewayID(i), c.GatewayPID(i), c.GatewayURL(i), c.GatewayLog(i))
	}
	fmt.Fprintf(stdout, "exchange %s, Redis prefix %s. Ctrl-C stops everything.\n", c.Exchange(), c.RedisPrefix())

	<-ctx.Done()
	fmt.Fprintln(stderr, "stopping...")
	start := time.Now()
	if err := c.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "stopped in %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}
