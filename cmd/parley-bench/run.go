package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/internal/cluster"
	"github.com/parleychat/parley/internal/loadgen"
)

// run parses the flags and runs the benchmark. getenv supplies PARLEY_*
// variables passed on to gateways that -cluster starts.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	workload := fs.String("workload", "", "named workload: "+strings.Join(loadgen.WorkloadNames(), ", ")+" (other flags override its settings)")
	urls := fs.String("urls", "", "comma-separated gateway base URLs (http://host:port), or one load balancer URL")
	pids := fs.String("pids", "", "comma-separated gateway process ids whose CPU and RSS to report (with -urls)")
	clusterN := fs.Int("cluster", 0, "start this many gateways on this machine's RabbitMQ and Redis for each run, and bench them directly (not through nginx)")
	binary := fs.String("binary", "", "parley binary for -cluster (default: build ./cmd/parley once)")
	clusterDir := fs.String("cluster-dir", "", "keep the -cluster gateways' logs under this directory (default: a temporary one, removed)")
	var gwEnv envFlag
	fs.Var(&gwEnv, "gateway-env", "KEY=VALUE added to the -cluster gateways' environment (repeatable)")
	infra := fs.String("infra", "beam.smp,redis-server", "command names of other server processes (RabbitMQ, Redis) whose CPU is reported beside the gateways'; empty for none")

	clients := fs.Int("clients", 0, "WebSocket clients")
	rooms := fs.Int("rooms", 0, "rooms; client i joins room i % rooms")
	publishers := fs.Int("publishers", 0, "clients that publish (0: an idle run)")
	rate := fs.Float64("rate", 0, "total messages per second of all publishers")
	duration := fs.Duration("duration", 0, "how long to publish (default 20s)")
	textBytes := fs.Int("text-bytes", 0, "message text size (default 64)")
	hold := fs.Duration("hold", 0, "how long an idle run holds its connections before measuring RSS (default 10s)")
	drain := fs.Duration("drain", 0, "longest wait for outstanding deliveries after the last send (default 10s)")
	late := fs.Duration("late", 0, "a send this far behind its schedule counts as late (default 5ms)")
	dialConc := fs.Int("dial-concurrency", 0, "handshakes in flight (default 100)")

	ramp := fs.Bool("ramp", false, "raise the rate step by step, from a fifth of the workload's rate (or -rate), until p99 passes -ramp-p99 or delivery drops below 100%")
	rampFactor := fs.Float64("ramp-factor", 0, "rate multiplier per ramp step (default 1.5)")
	rampSteps := fs.Int("ramp-steps", 0, "most ramp steps (default 12)")
	rampP99 := fs.Duration("ramp-p99", 0, "p99 latency that breaks the ramp (default 100ms)")

	repeat := fs.Int("repeat", 1, "runs of the workload; medians and ranges are reported over them")
	perfOut := fs.String("perf", "", "record the gateways' CPU with perf (call graphs) during the first run's publish phase into this file")
	quiet := fs.Bool("quiet", false, "no progress line every second")
	waitQuiet := fs.Duration("wait-quiet", 0, "before each run, wait up to this long for the machine to be nearly idle (other work below -quiet-cores)")
	quietCores := fs.Float64("quiet-cores", 0.3, "busy cores below which the machine counts as quiet for -wait-quiet")
	maxOther := fs.Float64("max-other", 0, "a run (or ramp step) during which other processes kept more than this many cores busy is reported but not counted, and run again (0: count every run)")
	maxAttempts := fs.Int("max-attempts", 0, "most runs to make for -repeat counted ones with -max-other (default 3 x -repeat)")
	jsonOut := fs.String("json", "", "also append each JSON line to this file")
	cpuProfile := fs.String("cpuprofile", "", "write the generator's own CPU profile to this file (to check it is not the bottleneck)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s [flags]\n\nLoad generator for Parley gateways (see docs/benchmarks.md).\n\n", args[0])
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

	cfg := loadgen.Config{Name: "custom"}
	if *workload != "" {
		w, ok := loadgen.Workload(*workload)
		if !ok {
			return fmt.Errorf("-workload %q: want one of %s", *workload, strings.Join(loadgen.WorkloadNames(), ", "))
		}
		cfg = w
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(name string, apply func()) {
		if set[name] {
			apply()
		}
	}
	override("clients", func() { cfg.Clients = *clients })
	override("rooms", func() { cfg.Rooms = *rooms })
	override("publishers", func() { cfg.Publishers = *publishers })
	override("rate", func() { cfg.Rate = *rate })
	override("duration", func() { cfg.Duration = *duration })
	override("text-bytes", func() { cfg.TextBytes = *textBytes })
	override("hold", func() { cfg.Hold = *hold })
	override("drain", func() { cfg.Drain = *drain })
	override("late", func() { cfg.LateAfter = *late })
	override("dial-concurrency", func() { cfg.DialConcurrency = *dialConc })
	cfg.Ramp, cfg.RampFactor, cfg.RampSteps, cfg.RampP99 = *ramp, *rampFactor, *rampSteps, *rampP99
	cfg.RampMaxOther = *maxOther
	if cfg.Ramp {
		cfg.Name += "-ramp"
		if !set["rate"] {
			// Start well below the workload's rate, so that the ramp finds
			// the break point even when the nominal rate is past it.
			cfg.Rate /= 5
		}
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	if *repeat < 1 {
		return fmt.Errorf("-repeat %d: want at least 1", *repeat)
	}

	switch {
	case *clusterN > 0 && *urls != "":
		return errors.New("give -urls or -cluster, not both")
	case *clusterN == 0 && *urls == "":
		return errors.New("give -urls (running gateways) or -cluster N (start them here)")
	case *urls != "":
		cfg.URLs = strings.Split(*urls, ",")
		var err error
		if cfg.PIDs, err = parseInts(*pids); err != nil {
			return fmt.Errorf("-pids: %w", err)
		}
	}
	if *infra != "" {
		var err error
		if cfg.InfraPIDs, err = loadgen.FindProcs(strings.Split(*infra, ",")...); err != nil {
			return err
		}
	}

	// The generator holds a descriptor per client; gateways started here
	// inherit the limit and need one per client they serve.
	limit, err := loadgen.RaiseFileLimit(uint64(cfg.Clients) + 4096)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "file descriptor limit %d\n", limit)

	var out io.Writer = stdout
	if *jsonOut != "" {
		f, err := os.OpenFile(*jsonOut, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("open -json file: %w", err)
		}
		defer f.Close()
		out = f
	}

	// Our PARLEY_* settings go to -cluster gateways, then -gateway-env.
	env := cluster.PassedOn(getenv)
	for _, kv := range gwEnv {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	bin := *binary
	if *clusterN > 0 && bin == "" {
		dir, err := os.MkdirTemp("", "parley-bench-")
		if err != nil {
			return fmt.Errorf("build directory: %w", err)
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(stderr, "building cmd/parley")
		if bin, err = cluster.Build(ctx, "", dir+"/parley", false); err != nil {
			return err
		}
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	attempts := *repeat
	if *maxOther > 0 {
		attempts = *maxAttempts
		if attempts <= 0 {
			attempts = 3 * *repeat
		}
	}
	var results []*loadgen.Result
	for i := 0; i < attempts && len(results) < *repeat; i++ {
		rc := cfg
		if i == 0 && *perfOut != "" {
			rc.OnPublish = perfHook(ctx, *perfOut, &rc, stderr)
		}
		var cl *loadgen.Cluster
		if *clusterN > 0 {
			copts := loadgen.ClusterOptions{Gateways: *clusterN, Binary: bin, Env: env}
			if *clusterDir != "" {
				copts.Dir = fmt.Sprintf("%s/run-%d-%s", *clusterDir, i+1, time.Now().Format("150405"))
			}
			if cl, err = loadgen.StartCluster(ctx, copts); err != nil {
				return err
			}
			rc.URLs, rc.PIDs = cl.URLs(), cl.PIDs()
		}
		if *waitQuiet > 0 {
			busy, err := loadgen.WaitQuiet(ctx, *quietCores, *waitQuiet)
			if err != nil {
				if cl != nil {
					_ = cl.Close()
				}
				return err
			}
			fmt.Fprintf(stderr, "machine busy %.2f cores before the run\n", busy)
		}
		fmt.Fprintf(stderr, "run %d (%d of %d counted so far): %s against %s (gateway pids %v)\n",
			i+1, len(results), *repeat, rc.Name, strings.Join(rc.URLs, " "), rc.PIDs)
		res, runErr := loadgen.Run(ctx, rc)
		var closeErr error
		if cl != nil {
			closeErr = cl.Close()
		}
		if res != nil {
			if err := loadgen.WriteSummary(stdout, res); err != nil {
				return err
			}
			res.Noisy = *maxOther > 0 && !cfg.Ramp && len(res.Steps) > 0 && res.Steps[0].OtherCores > *maxOther
			if err := loadgen.WriteJSON(out, res); err != nil {
				return err
			}
			if res.Noisy {
				fmt.Fprintf(stderr, "not counted: other processes kept %.2f cores busy (-max-other %.2f)\n", res.Steps[0].OtherCores, *maxOther)
			} else {
				results = append(results, res)
			}
		}
		if err := errors.Join(runErr, closeErr); err != nil {
			return err
		}
	}
	if len(results) > 1 {
		agg := loadgen.Summarize(results)
		if err := loadgen.WriteAggregate(stdout, agg); err != nil {
			return err
		}
		return loadgen.WriteJSON(out, agg)
	}
	return nil
}

// perfHook returns a publish hook that samples the gateways' call stacks
// with perf for the publish phase.
func perfHook(ctx context.Context, path string, rc *loadgen.Config, stderr io.Writer) func(time.Duration) func() error {
	return func(d time.Duration) func() error {
		pids := make([]string, len(rc.PIDs))
		for i, p := range rc.PIDs {
			pids[i] = strconv.Itoa(p)
		}
		cmd := exec.CommandContext(ctx, "perf", "record", "-F", "499", "-g", "-o", path, "-p", strings.Join(pids, ","),
			"--", "sleep", strconv.FormatFloat(d.Seconds(), 'f', 1, 64))
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Start(); err != nil {
			return func() error { return fmt.Errorf("start perf: %w", err) }
		}
		return func() error {
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("perf record: %w", err)
			}
			return nil
		}
	}
}

func parseInts(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", f, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// envFlag collects repeated KEY=VALUE flags.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}
