package faults

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Crowd is many Chatters and the load they send. Create it with StartCrowd;
// Stop it when done. Its methods are safe for concurrent use.
type Crowd struct {
	Chatters []*Chatter

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartCrowd starts one Chatter for each of opts. They connect in the
// background; WaitJoined waits for them.
func StartCrowd(opts []ChatterOptions) *Crowd {
	ctx, cancel := context.WithCancel(context.Background())
	cr := &Crowd{cancel: cancel}
	for _, o := range opts {
		c := NewChatter(o)
		cr.Chatters = append(cr.Chatters, c)
		cr.wg.Go(func() { c.Run(ctx) })
	}
	return cr
}

// Stop closes every Chatter's connection normally, in parallel, and waits
// until all have ended.
func (cr *Crowd) Stop() {
	var wg sync.WaitGroup
	for _, c := range cr.Chatters {
		wg.Go(c.Stop)
	}
	wg.Wait()
	cr.cancel()
	cr.wg.Wait()
}

// WaitJoined waits until every Chatter is joined, or ctx ends.
func (cr *Crowd) WaitJoined(ctx context.Context) error {
	return poll(ctx, 20*time.Millisecond, func() (bool, string) {
		n := 0
		for _, c := range cr.Chatters {
			if c.Joined() {
				n++
			}
		}
		return n == len(cr.Chatters), fmt.Sprintf("%d of %d joined", n, len(cr.Chatters))
	})
}

// Load sends rate messages per second in all, taking the senders in turn,
// until the returned stop function is called; stop waits for the sender
// goroutine and returns how many sends it asked for. The pace is kept
// against the clock: a tick that comes late sends what is due.
func (cr *Crowd) Load(rate float64, senders []*Chatter) (stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	var n int
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for due := int(time.Since(start).Seconds() * rate); n < due; {
				c := senders[n%len(senders)]
				n++
				c.Send(fmt.Sprintf("message %d from %s", n, c.Name()))
			}
		}
	}()
	return func() int {
		cancel()
		<-done
		return n
	}
}

// Settle waits until every send has been answered and every Chatter has
// shown every acknowledged message of its room, or ctx ends; then it says
// what is still missing.
func (cr *Crowd) Settle(ctx context.Context) error {
	return poll(ctx, 50*time.Millisecond, func() (bool, string) {
		unanswered := 0
		acked := make(map[string][]string) // by room
		for _, c := range cr.Chatters {
			unanswered += c.unanswered()
			acked[c.Room()] = append(acked[c.Room()], c.acked()...)
		}
		behind := 0
		for _, c := range cr.Chatters {
			if !c.hasSeen(acked[c.Room()]) {
				behind++
			}
		}
		return unanswered == 0 && behind == 0,
			fmt.Sprintf("%d sends unanswered, %d clients lack acknowledged messages", unanswered, behind)
	})
}

// Report is what a Crowd's Chatters did and saw, checked against the
// guarantees: every acknowledged message reaches every member of its room,
// once, in seq order; every send is answered.
type Report struct {
	Clients int
	// StayedConnected counts the clients that kept their first connection
	// to the end; Reconnected the others.
	StayedConnected, Reconnected int
	// Reconnects counts connections after the first (failed dials included).
	Reconnects int

	Sent, Acked, Unavailable, OtherErrors, Unanswered int
	// Retried counts answered sends that were written on more than one
	// connection (a connection was lost before their answer came).
	Retried int

	// Checked counts (member, acknowledged message) pairs found delivered;
	// Missing those not found.
	Checked, Missing int
	// SeqMismatch counts messages a member saw with another seq than the
	// sender's ack said.
	SeqMismatch int
	// Dups, Gaps, GapFrames and Epochs sum the Chatters' counts (see State).
	Dups, Gaps, GapFrames, Epochs int
	// Problems describes the first problems found.
	Problems []string

	// Delivery is the time from a send's creation to its being shown, over
	// the checked pairs; AckLatency from first write to ack.
	Delivery, AckLatency Stats
}

// Report checks what the Chatters did. Call it after Settle (or after Stop).
func (cr *Crowd) Report() Report {
	states := make([]State, len(cr.Chatters))
	for i, c := range cr.Chatters {
		states[i] = c.Snapshot()
	}
	return check(states)
}

// States returns a snapshot of every Chatter.
func (cr *Crowd) States() []State {
	states := make([]State, len(cr.Chatters))
	for i, c := range cr.Chatters {
		states[i] = c.Snapshot()
	}
	return states
}

type ackInfo struct {
	SendResult
	sender string
}

func check(states []State) Report {
	r := Report{Clients: len(states)}
	problem := func(format string, args ...any) {
		if len(r.Problems) < 30 {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	acks := make(map[string][]ackInfo) // by room
	var ackLat []time.Duration
	for _, s := range states {
		if s.StayedConnected() {
			r.StayedConnected++
		} else {
			r.Reconnected++
		}
		r.Reconnects += max(0, len(s.Conns)-1)
		r.Sent += len(s.Results) + s.Unanswered
		r.Unanswered += s.Unanswered
		for _, res := range s.Results {
			if res.Writes > 1 {
				r.Retried++
			}
			switch res.Code {
			case "":
				r.Acked++
				acks[res.Room] = append(acks[res.Room], ackInfo{res, s.Name})
				ackLat = append(ackLat, res.Answered.Sub(res.Written))
			case "unavailable":
				r.Unavailable++
			default:
				r.OtherErrors++
			}
		}
		r.Dups += s.Dups
		r.Gaps += s.Gaps
		r.GapFrames += s.GapFrames
		r.Epochs += s.Epochs
		for _, p := range s.Problems {
			problem("%s: %s", s.Name, p)
		}
		if s.NProblems > len(s.Problems) {
			problem("%s: and %d more problems", s.Name, s.NProblems-len(s.Problems))
		}
	}
	var delivery []time.Duration
	for _, s := range states {
		missing := 0
		for _, a := range acks[s.Room] {
			seen, ok := s.Seen[a.ID]
			if !ok {
				missing++
				if missing <= 3 {
					problem("%s lacks %s (seq %d, acked to %s at %s)", s.Name, a.ID, a.Seq, a.sender, a.Answered.Format("15:04:05.000"))
				}
				continue
			}
			r.Checked++
			if seen.Seq != a.Seq {
				r.SeqMismatch++
				problem("%s saw %s as seq %d, its ack said %d", s.Name, a.ID, seen.Seq, a.Seq)
			}
			if seen.How != "join" {
				delivery = append(delivery, seen.At.Sub(a.Created))
			}
		}
		r.Missing += missing
	}
	r.Delivery = StatsOf(delivery)
	r.AckLatency = StatsOf(ackLat)
	return r
}

// Err returns an error describing every broken guarantee in r, or nil.
func (r Report) Err() error {
	var errs []error
	if r.Missing > 0 {
		errs = append(errs, fmt.Errorf("%d (member, acknowledged message) pairs missing", r.Missing))
	}
	if r.Dups > 0 {
		errs = append(errs, fmt.Errorf("%d duplicate deliveries", r.Dups))
	}
	if r.Gaps > 0 {
		errs = append(errs, fmt.Errorf("%d gaps in seq order", r.Gaps))
	}
	if r.SeqMismatch > 0 {
		errs = append(errs, fmt.Errorf("%d messages seen with another seq than acknowledged", r.SeqMismatch))
	}
	if r.Unanswered > 0 {
		errs = append(errs, fmt.Errorf("%d sends never answered", r.Unanswered))
	}
	if r.OtherErrors > 0 {
		errs = append(errs, fmt.Errorf("%d sends answered with an error other than unavailable", r.OtherErrors))
	}
	if len(errs) == 0 {
		return nil
	}
	if len(r.Problems) > 0 {
		errs = append(errs, errors.New("problems:\n  "+strings.Join(r.Problems, "\n  ")))
	}
	return errors.Join(errs...)
}

// String summarises r in one paragraph, for t.Logf.
func (r Report) String() string {
	return fmt.Sprintf("%d clients (%d stayed connected, %d reconnected, %d reconnects); "+
		"%d sends: %d acked, %d unavailable, %d other errors, %d unanswered, %d retried on a new connection; "+
		"%d deliveries checked, %d missing, %d dups, %d gaps, %d gap frames, %d epoch changes; "+
		"delivery %v; ack %v",
		r.Clients, r.StayedConnected, r.Reconnected, r.Reconnects,
		r.Sent, r.Acked, r.Unavailable, r.OtherErrors, r.Unanswered, r.Retried,
		r.Checked, r.Missing, r.Dups, r.Gaps, r.GapFrames, r.Epochs,
		r.Delivery, r.AckLatency)
}

// Stats summarises durations.
type Stats struct {
	N                       int
	Min, P10, P50, P90, P99 time.Duration
	Max                     time.Duration
}

// StatsOf returns the Stats of ds.
func StatsOf(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return Stats{N: len(s), Min: s[0], P10: at(0.10), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: s[len(s)-1]}
}

func (s Stats) String() string {
	if s.N == 0 {
		return "n=0"
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("n=%d min=%v p50=%v p90=%v p99=%v max=%v", s.N, r(s.Min), r(s.P50), r(s.P90), r(s.P99), r(s.Max))
}

// Histogram counts ds in buckets of width bucket from 0. It returns the
// counts and a text rendering, one line per bucket from the first to the
// last non-empty one.
func Histogram(ds []time.Duration, bucket time.Duration) ([]int, string) {
	if len(ds) == 0 {
		return nil, "(empty)"
	}
	var counts []int
	for _, d := range ds {
		i := max(0, int(d/bucket))
		for len(counts) <= i {
			counts = append(counts, 0)
		}
		counts[i]++
	}
	peak := slices.Max(counts)
	var b strings.Builder
	first := slices.IndexFunc(counts, func(n int) bool { return n > 0 })
	for i := first; i < len(counts); i++ {
		if counts[i] == 0 {
			// Runs of empty buckets are told in one line.
			j := i
			for counts[j+1] == 0 {
				j++
			}
			if j > i {
				fmt.Fprintf(&b, "  %6v-%-6v    0\n", time.Duration(i)*bucket, time.Duration(j+1)*bucket)
				i = j
				continue
			}
		}
		bar := strings.Repeat("#", (counts[i]*40+peak-1)/peak)
		fmt.Fprintf(&b, "  %6v-%-6v %4d %s\n", time.Duration(i)*bucket, time.Duration(i+1)*bucket, counts[i], bar)
	}
	return counts, b.String()
}

// poll calls cond every interval until it reports true or ctx ends; then it
// returns an error with cond's last word.
func poll(ctx context.Context, interval time.Duration, cond func() (bool, string)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, why := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", why, ctx.Err())
		case <-t.C:
		}
	}
}
