package loadgen

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one run measured. Durations in JSON are milliseconds,
// sizes megabytes or kilobytes, as the field names say.
type Result struct {
	Workload string    `json:"workload"`
	Started  time.Time `json:"started"`
	URLs     []string  `json:"urls"`
	// PIDs are the gateway processes measured; none means CPU and RSS were
	// not measured.
	PIDs       []int   `json:"gw_pids"`
	Clients    int     `json:"clients"`
	Rooms      int     `json:"rooms"`
	Publishers int     `json:"publishers"`
	Rate       float64 `json:"rate"`
	DurationS  float64 `json:"duration_s"`
	TextBytes  int     `json:"text_bytes"`

	// Connect phase.
	Connected  int64            `json:"connected"`
	DialErrors map[string]int64 `json:"dial_errors,omitempty"`
	ConnectS   float64          `json:"connect_s"`
	ConnectPS  float64          `json:"connects_per_s"`
	Dial       Summary          `json:"dial"`
	Joined     int64            `json:"joined"`
	// JoinRetries counts joins sent again after the gateway answered
	// "unavailable".
	JoinRetries int64 `json:"join_retries,omitempty"`
	// JoinS is from the first handshake until every client had joined;
	// Join times each client's join, from sending it to "joined".
	JoinS float64 `json:"all_joined_s"`
	Join  Summary `json:"join"`

	// Gateways' memory: before the clients connected, once they all
	// joined (after Hold, for an idle run), and at the end.
	GatewayRSSBaseMB   float64 `json:"gw_rss_base_mb"`
	GatewayRSSJoinedMB float64 `json:"gw_rss_joined_mb"`
	GatewayRSSEndMB    float64 `json:"gw_rss_end_mb"`
	// RSSPerConnKB is the gateways' RSS growth from base to joined per
	// connected client.
	RSSPerConnKB float64 `json:"rss_per_conn_kb"`
	// GatewayThreads is the gateways' OS thread count once joined.
	GatewayThreads int `json:"gw_threads"`
	// IdleCPUPct is the gateways' CPU while an idle run holds its
	// connections, in percent of a core.
	IdleCPUPct float64 `json:"gw_idle_cpu_pct,omitempty"`

	// Steps are the publish phases: one, or the ramp's.
	Steps []Step `json:"steps,omitempty"`
	// Break is the ramp step that broke (p99 or delivery), -1 if none did.
	Break       int    `json:"break_step"`
	BreakReason string `json:"break_reason,omitempty"`

	Disconnects int64            `json:"disconnects"`
	CloseCodes  map[string]int64 `json:"close_codes,omitempty"`
	ErrorCodes  map[string]int64 `json:"error_codes,omitempty"`
	// Foreign counts message frames that were not the generator's, or
	// that came before the client's joined frame.
	Foreign int64 `json:"foreign"`
	// Noisy is set by the caller on a run it does not count because other
	// work loaded the machine.
	Noisy bool `json:"noisy,omitempty"`
	// GapFrames counts "gap" frames: a gateway that could not queue more
	// for a slow client replaced its queued messages by one, and the
	// client is to fetch them from history (the generator does not).
	// Gapped is how many messages they stood for.
	GapFrames int64 `json:"gap_frames"`
	Gapped    int64 `json:"gapped_messages"`
}

// Step is one publish phase.
type Step struct {
	Step       int     `json:"step"`
	TargetRate float64 `json:"target_rate"`
	// SendRate is what the publishers achieved over the phase.
	SendRate   float64 `json:"send_rate"`
	Sent       int64   `json:"sent"`
	Acked      int64   `json:"acked"`
	Failed     int64   `json:"failed"`
	Unanswered int64   `json:"unanswered"`
	// Late counts sends more than LateAfter behind their schedule; Skipped,
	// sends dropped because the generator was still behind a second after
	// the phase.
	Late       int64   `json:"late"`
	Skipped    int64   `json:"skipped"`
	Lag        Summary `json:"send_lag"`
	WriteError int64   `json:"write_errors"`

	Members    int64   `json:"members"`
	Expected   int64   `json:"expected"`
	Delivered  int64   `json:"delivered"`
	DeliverPct float64 `json:"delivered_pct"`
	Duplicates int64   `json:"duplicates"`
	Reordered  int64   `json:"reordered"`

	// Rates over the phase, from its start to its last delivery.
	WindowS        float64 `json:"window_s"`
	DeliveriesPS   float64 `json:"deliveries_per_s"`
	WSMessagesPS   float64 `json:"ws_messages_per_s"`
	FramesPS       float64 `json:"frames_per_s"`
	FramesPerWSMsg float64 `json:"frames_per_ws_message"`
	Latency        Summary `json:"latency"`
	// Arrival is latency up to the kernel's receive timestamp on the
	// generator's socket rather than the generator's read: the difference
	// is the generator waiting for a processor it shares with the gateways.
	Arrival         Summary `json:"arrival"`
	AckLatency      Summary `json:"ack_latency"`
	GatewayCPUS     float64 `json:"gw_cpu_s"`
	GatewayCPUPct   float64 `json:"gw_cpu_pct"`
	CPUPerDelivUS   float64 `json:"gw_cpu_per_delivery_us"`
	InfraCPUS       float64 `json:"infra_cpu_s"`
	GeneratorCPUS   float64 `json:"gen_cpu_s"`
	GenPerDelivUS   float64 `json:"gen_cpu_per_delivery_us"`
	ServerPerDelivU float64 `json:"gw_infra_cpu_per_delivery_us"`
	// MachineCores is the busy CPU of the whole machine over the phase, in
	// cores; OtherCores is what of it was neither the gateways, RabbitMQ,
	// Redis nor the generator (other people's work on a shared machine).
	MachineCores float64 `json:"machine_busy_cores"`
	OtherCores   float64 `json:"other_busy_cores"`
	// Noisy marks a ramp step run again because other work loaded the
	// machine (see Config.RampMaxOther).
	Noisy bool `json:"noisy,omitempty"`
}

// Run runs cfg: connect, join, then publish (once, or the ramp) or hold,
// and reports what it measured. A run that fails part way returns what it
// measured so far with the error. All connections are closed, and all
// goroutines Run started have ended, when it returns.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	s := newSession(cfg)
	defer s.close()
	stop := context.AfterFunc(ctx, s.closeConns)
	defer stop()

	res := &Result{
		Workload: cfg.Name, Started: time.Now(), URLs: cfg.URLs, PIDs: cfg.PIDs, Clients: cfg.Clients, Rooms: cfg.Rooms,
		Publishers: cfg.Publishers, Rate: cfg.Rate, DurationS: cfg.Duration.Seconds(), TextBytes: cfg.TextBytes,
		Break: -1,
	}
	var phase atomic.Pointer[string]
	setPhase := func(p string) { phase.Store(&p) }
	setPhase("connect")
	pctx, pcancel := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Go(func() { s.progress(pctx, func() string { return *phase.Load() }) })
	defer func() {
		pcancel()
		pwg.Wait()
	}()
	defer func() { s.collect(res) }()

	base := readProcs(cfg.PIDs)
	res.GatewayRSSBaseMB = mb(sumRSS(base))

	took, err := s.connect(ctx)
	res.Connected, res.ConnectS, res.Dial = s.connected.Load(), took.Seconds(), s.dial.Summary()
	res.ConnectPS = float64(res.Connected) / max(took.Seconds(), 1e-9)
	if err != nil {
		return res, fmt.Errorf("loadgen: connect: %w", err)
	}
	setPhase("join")
	err = s.awaitJoins(ctx)
	res.Joined, res.Join, res.JoinRetries = s.joined.Load(), s.join.Summary(), s.joinRetries.Load()
	res.JoinS = time.Since(res.Started).Seconds()
	if err != nil {
		return res, fmt.Errorf("loadgen: join: %w", err)
	}
	// Publishers are numbered in the order they connected; the schedule
	// offsets them by number.
	for i, p := range s.pubs {
		p.id = i
	}

	if len(s.pubs) == 0 {
		setPhase("hold")
		gw0, t0 := readProcs(cfg.PIDs), time.Now()
		t := time.NewTimer(cfg.Hold)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return res, ctx.Err()
		}
		res.IdleCPUPct = 100 * (sumCPU(readProcs(cfg.PIDs)) - sumCPU(gw0)).Seconds() / time.Since(t0).Seconds()
	}
	joined := readProcs(cfg.PIDs)
	res.GatewayRSSJoinedMB = mb(sumRSS(joined))
	res.RSSPerConnKB = float64(sumRSS(joined)-sumRSS(base)) / 1024 / float64(max(res.Connected, 1))
	for _, p := range joined {
		res.GatewayThreads += p.Threads
	}
	defer func() { res.GatewayRSSEndMB = mb(sumRSS(readProcs(cfg.PIDs))) }()
	if len(s.pubs) == 0 {
		return res, nil
	}

	rate := cfg.Rate
	steps := 1
	if cfg.Ramp {
		steps = cfg.RampSteps
	}
	noisy := 0
	for step := range steps {
		setPhase(fmt.Sprintf("step %d %.0f/s", step, rate))
		if !cfg.Ramp {
			setPhase("publish")
		}
		st, err := s.runStep(ctx, step, rate)
		res.Steps = append(res.Steps, st)
		if err != nil {
			return res, err
		}
		if cfg.Progress != nil && cfg.Ramp {
			fmt.Fprintf(cfg.Progress, "step %d: rate %.0f/s sent %.0f/s delivered %.3f%% p99 %s late %d, other work %.2f cores\n",
				step, rate, st.SendRate, st.DeliverPct, fmtMs(st.Latency.P99), st.Late, st.OtherCores)
		}
		if !cfg.Ramp {
			break
		}
		if cfg.RampMaxOther > 0 && st.OtherCores > cfg.RampMaxOther {
			// Other work on the machine spoiled the step: run it again.
			st.Noisy = true
			res.Steps[len(res.Steps)-1] = st
			if noisy++; noisy > 3 {
				res.Break, res.BreakReason = step, "the machine stayed too busy with other work"
				break
			}
			continue
		}
		noisy = 0
		switch {
		case st.DeliverPct < 100:
			res.Break, res.BreakReason = step, fmt.Sprintf("delivered %.3f%%", st.DeliverPct)
		case st.Latency.P99 > cfg.RampP99:
			res.Break, res.BreakReason = step, fmt.Sprintf("p99 %v > %v", st.Latency.P99, cfg.RampP99)
		case st.Failed > 0 || st.Unanswered > 0:
			res.Break, res.BreakReason = step, fmt.Sprintf("%d sends failed, %d unanswered", st.Failed, st.Unanswered)
		}
		if res.Break >= 0 {
			break
		}
		rate *= cfg.RampFactor
	}
	return res, nil
}

// runStep runs one publish phase and measures it.
func (s *session) runStep(ctx context.Context, step int, rate float64) (Step, error) {
	cfg := s.cfg
	members := s.snapshotMembers()
	s.latency.Reset()
	s.arrival.Reset()
	s.ackLatency.Reset()
	s.lag.Reset()
	s.late.Store(0)
	s.skipped.Store(0)
	s.writeErrors.Store(0)
	dups0, reord0 := s.duplicates.Load(), s.reordered.Load()
	ws0, frames0 := s.wsMessages.Load(), s.frames.Load()
	gw0, infra0 := readProcs(cfg.PIDs), readProcs(cfg.InfraPIDs)
	self0, _ := ReadProc(0)
	m0, _ := machineCPU()

	var wait func() error
	if step == 0 && cfg.OnPublish != nil {
		wait = cfg.OnPublish(cfg.Duration)
	}
	t0 := s.now()
	s.publishStep(ctx, step, rate, cfg.Duration)
	tPub := s.now()
	s.drain(ctx, step, members)
	tEnd := s.now()
	gw1, infra1 := readProcs(cfg.PIDs), readProcs(cfg.InfraPIDs)
	self1, _ := ReadProc(0)
	m1, _ := machineCPU()
	var waitErr error
	if wait != nil {
		waitErr = wait()
	}

	st := Step{Step: step, TargetRate: rate, Late: s.late.Load(), Skipped: s.skipped.Load(), Lag: s.lag.Summary(),
		WriteError: s.writeErrors.Load()}
	for _, p := range s.pubs {
		st.Sent += p.sent[step].Load()
		st.Acked += p.acked[step].Load()
		st.Failed += p.failed[step].Load()
	}
	st.Unanswered = st.Sent - st.Acked - st.Failed
	st.SendRate = float64(st.Sent) / max(float64(tPub-t0)/1e9, 1e-9)
	for _, m := range members {
		st.Members += m
	}
	st.Expected = s.expected(step, members)
	st.Delivered = s.delivered[step].Load()
	if st.Expected > 0 {
		st.DeliverPct = 100 * float64(st.Delivered) / float64(st.Expected)
	}
	st.Duplicates, st.Reordered = s.duplicates.Load()-dups0, s.reordered.Load()-reord0
	end := tPub
	if last := s.lastDelivery.Load(); last > end {
		end = min(last, tEnd)
	}
	win := float64(end-t0) / 1e9
	st.WindowS = win
	st.DeliveriesPS = float64(st.Delivered) / win
	ws, frames := s.wsMessages.Load()-ws0, s.frames.Load()-frames0
	st.WSMessagesPS, st.FramesPS = float64(ws)/win, float64(frames)/win
	if ws > 0 {
		st.FramesPerWSMsg = float64(frames) / float64(ws)
	}
	st.Latency, st.Arrival, st.AckLatency = s.latency.Summary(), s.arrival.Summary(), s.ackLatency.Summary()
	gwCPU := sumCPU(gw1) - sumCPU(gw0)
	infraCPU := sumCPU(infra1) - sumCPU(infra0)
	st.GatewayCPUS, st.InfraCPUS = gwCPU.Seconds(), infraCPU.Seconds()
	st.GatewayCPUPct = 100 * gwCPU.Seconds() / (float64(tEnd-t0) / 1e9)
	st.GeneratorCPUS = (self1.CPU - self0.CPU).Seconds()
	phase := float64(tEnd-t0) / 1e9
	st.MachineCores = (m1 - m0).Seconds() / phase
	st.OtherCores = st.MachineCores - (gwCPU.Seconds()+infraCPU.Seconds()+st.GeneratorCPUS)/phase
	if st.Delivered > 0 {
		d := float64(st.Delivered)
		st.CPUPerDelivUS = gwCPU.Seconds() * 1e6 / d
		st.GenPerDelivUS = st.GeneratorCPUS * 1e6 / d
		st.ServerPerDelivU = (gwCPU + infraCPU).Seconds() * 1e6 / d
	}
	if waitErr != nil {
		return st, fmt.Errorf("loadgen: publish hook: %w", waitErr)
	}
	return st, ctx.Err()
}

// collect copies the session's error and close tallies into res.
func (s *session) collect(res *Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res.DialErrors = maps.Clone(s.dialErrors)
	res.ErrorCodes = maps.Clone(s.errorCodes)
	res.CloseCodes = maps.Clone(s.closeCodes)
	res.Disconnects = s.disconnects
	res.Foreign = s.foreign.Load()
	res.GapFrames, res.Gapped = s.gapFrames.Load(), s.gapped.Load()
	if len(res.DialErrors) == 0 {
		res.DialErrors = nil
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
