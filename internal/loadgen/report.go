package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteSummary writes a human-readable summary of res.
func WriteSummary(w io.Writer, res *Result) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	p := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	fmt.Fprintf(tw, "%s: %d clients, %d rooms, %d publishers, %g msg/s for %gs, %d-byte texts, gateways %s\n",
		res.Workload, res.Clients, res.Rooms, res.Publishers, res.Rate, res.DurationS, res.TextBytes, strings.Join(res.URLs, " "))
	p("connect", "%d connected in %.2fs (%.0f/s); handshake p50 %s p99 %s max %s",
		res.Connected, res.ConnectS, res.ConnectPS, fmtMs(res.Dial.P50), fmtMs(res.Dial.P99), fmtMs(res.Dial.Max))
	if len(res.DialErrors) > 0 {
		p("dial errors", "%v", res.DialErrors)
	}
	p("join", "%d joined, all %.2fs after the first handshake; join p50 %s p99 %s max %s",
		res.Joined, res.JoinS, fmtMs(res.Join.P50), fmtMs(res.Join.P99), fmtMs(res.Join.Max))
	if res.JoinRetries > 0 {
		p("join retries", "%d joins sent again after the gateway answered unavailable", res.JoinRetries)
	}
	if len(res.PIDs) > 0 {
		p("gateway RSS", "%.1f MB before, %.1f MB joined, %.1f MB at end: %.1f KB per connection; %d threads",
			res.GatewayRSSBaseMB, res.GatewayRSSJoinedMB, res.GatewayRSSEndMB, res.RSSPerConnKB, res.GatewayThreads)
		if res.Publishers == 0 {
			p("gateway CPU", "%.1f%% of a core while idle", res.IdleCPUPct)
		}
	} else {
		p("gateway RSS", "not measured (no gateway pids)")
	}
	for _, st := range res.Steps {
		if len(res.Steps) > 1 {
			noisy := ""
			if st.Noisy {
				noisy = " (not counted: the machine was busy with other work)"
			}
			fmt.Fprintf(tw, "  step %d\t%.0f msg/s%s\n", st.Step, st.TargetRate, noisy)
		}
		p("sends", "%d sent (%.1f/s of %.0f/s), %d acked, %d failed, %d unanswered; late %d, skipped %d, lag p99 %s max %s",
			st.Sent, st.SendRate, st.TargetRate, st.Acked, st.Failed, st.Unanswered, st.Late, st.Skipped,
			fmtMs(st.Lag.P99), fmtMs(st.Lag.Max))
		p("deliveries", "%d of %d expected (%.3f%%), %d duplicates, %d out of order",
			st.Delivered, st.Expected, st.DeliverPct, st.Duplicates, st.Reordered)
		p("rates", "%.0f deliveries/s, %.0f WebSocket messages/s, %.0f frames/s (%.2f frames per message) over %.2fs",
			st.DeliveriesPS, st.WSMessagesPS, st.FramesPS, st.FramesPerWSMsg, st.WindowS)
		p("latency", "p50 %s p90 %s p99 %s p99.9 %s max %s (mean %s)",
			fmtMs(st.Latency.P50), fmtMs(st.Latency.P90), fmtMs(st.Latency.P99), fmtMs(st.Latency.P999),
			fmtMs(st.Latency.Max), fmtMs(st.Latency.Mean))
		p("arrival", "p50 %s p90 %s p99 %s max %s (send to the kernel's receive timestamp on the generator's socket)",
			fmtMs(st.Arrival.P50), fmtMs(st.Arrival.P90), fmtMs(st.Arrival.P99), fmtMs(st.Arrival.Max))
		p("ack latency", "p50 %s p99 %s max %s", fmtMs(st.AckLatency.P50), fmtMs(st.AckLatency.P99), fmtMs(st.AckLatency.Max))
		p("CPU", "gateways %.2fs (%.0f%% of a core), %.2f us per delivery; +RabbitMQ/Redis %.2f us; generator %.2fs, %.2f us per delivery",
			st.GatewayCPUS, st.GatewayCPUPct, st.CPUPerDelivUS, st.ServerPerDelivU, st.GeneratorCPUS, st.GenPerDelivUS)
		p("machine", "%.2f cores busy, of which %.2f other work (not the gateways, RabbitMQ, Redis or the generator)",
			st.MachineCores, st.OtherCores)
	}
	if res.Break >= 0 {
		p("ramp", "broke at step %d: %s", res.Break, res.BreakReason)
	}
	if res.Disconnects > 0 || len(res.ErrorCodes) > 0 || res.Foreign > 0 || res.GapFrames > 0 {
		p("trouble", "%d disconnects %v, error frames %v, %d foreign messages, %d gap frames for %d messages (slow clients)",
			res.Disconnects, res.CloseCodes, res.ErrorCodes, res.Foreign, res.GapFrames, res.Gapped)
	}
	return tw.Flush()
}

// WriteJSON writes res as one line of JSON.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// metric is one number of a result that is compared across runs.
type metric struct {
	name string
	get  func(*Result) (float64, bool)
}

func stepMetric(name string, f func(Step) float64) metric {
	return metric{name, func(r *Result) (float64, bool) {
		if len(r.Steps) == 0 {
			return 0, false
		}
		return f(r.Steps[0]), true
	}}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func metrics() []metric {
	return []metric{
		{"connected", func(r *Result) (float64, bool) { return float64(r.Connected), true }},
		{"connects_per_s", func(r *Result) (float64, bool) { return r.ConnectPS, true }},
		{"handshake_p99_ms", func(r *Result) (float64, bool) { return ms(r.Dial.P99), true }},
		{"rss_per_conn_kb", func(r *Result) (float64, bool) { return r.RSSPerConnKB, true }},
		{"gw_rss_joined_mb", func(r *Result) (float64, bool) { return r.GatewayRSSJoinedMB, true }},
		{"gw_idle_cpu_pct", func(r *Result) (float64, bool) { return r.IdleCPUPct, r.Publishers == 0 }},
		stepMetric("send_rate", func(s Step) float64 { return s.SendRate }),
		stepMetric("delivered_pct", func(s Step) float64 { return s.DeliverPct }),
		stepMetric("duplicates", func(s Step) float64 { return float64(s.Duplicates) }),
		stepMetric("deliveries_per_s", func(s Step) float64 { return s.DeliveriesPS }),
		stepMetric("ws_messages_per_s", func(s Step) float64 { return s.WSMessagesPS }),
		stepMetric("frames_per_s", func(s Step) float64 { return s.FramesPS }),
		stepMetric("frames_per_ws_message", func(s Step) float64 { return s.FramesPerWSMsg }),
		stepMetric("p50_ms", func(s Step) float64 { return ms(s.Latency.P50) }),
		stepMetric("p90_ms", func(s Step) float64 { return ms(s.Latency.P90) }),
		stepMetric("p99_ms", func(s Step) float64 { return ms(s.Latency.P99) }),
		stepMetric("max_ms", func(s Step) float64 { return ms(s.Latency.Max) }),
		stepMetric("arrival_p50_ms", func(s Step) float64 { return ms(s.Arrival.P50) }),
		stepMetric("arrival_p99_ms", func(s Step) float64 { return ms(s.Arrival.P99) }),
		stepMetric("ack_p99_ms", func(s Step) float64 { return ms(s.AckLatency.P99) }),
		stepMetric("late_sends", func(s Step) float64 { return float64(s.Late) }),
		stepMetric("gw_cpu_pct", func(s Step) float64 { return s.GatewayCPUPct }),
		stepMetric("gw_cpu_per_delivery_us", func(s Step) float64 { return s.CPUPerDelivUS }),
		stepMetric("gw_infra_cpu_per_delivery_us", func(s Step) float64 { return s.ServerPerDelivU }),
		stepMetric("gen_cpu_per_delivery_us", func(s Step) float64 { return s.GenPerDelivUS }),
		stepMetric("other_busy_cores", func(s Step) float64 { return s.OtherCores }),
	}
}

// Aggregate is the median, minimum and maximum of each metric over runs of
// one workload.
type Aggregate struct {
	Workload string               `json:"workload"`
	Runs     int                  `json:"runs"`
	Median   map[string]float64   `json:"median"`
	Range    map[string][]float64 `json:"range"`
}

// Summarize aggregates runs of one workload.
func Summarize(runs []*Result) Aggregate {
	a := Aggregate{Runs: len(runs), Median: map[string]float64{}, Range: map[string][]float64{}}
	if len(runs) > 0 {
		a.Workload = runs[0].Workload
	}
	for _, m := range metrics() {
		var vs []float64
		for _, r := range runs {
			if v, ok := m.get(r); ok {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			continue
		}
		slices.Sort(vs)
		med := vs[len(vs)/2]
		if len(vs)%2 == 0 {
			med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
		}
		a.Median[m.name] = med
		a.Range[m.name] = []float64{vs[0], vs[len(vs)-1]}
	}
	return a
}

// WriteAggregate writes a as a table: metric, median, range.
func WriteAggregate(w io.Writer, a Aggregate) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s over %d runs\tmedian\tmin\tmax\t\n", a.Workload, a.Runs)
	order := map[string]int{}
	for i, m := range metrics() {
		order[m.name] = i
	}
	names := slices.SortedFunc(maps.Keys(a.Median), func(x, y string) int { return order[x] - order[y] })
	for _, n := range names {
		r := a.Range[n]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", n, num(a.Median[n]), num(r[0]), num(r[1]))
	}
	return tw.Flush()
}

func num(v float64) string {
	switch {
	case v >= 1000 || v <= -1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
