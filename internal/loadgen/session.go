package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// session is one run's connections and counters.
type session struct {
	cfg   Config
	clock time.Time // the origin of now(); monotonic

	rooms   []string
	clients []*client
	pubs    []*publisher
	members []atomic.Int64 // clients that joined each room

	// Counters the readers update.
	wsMessages, frames atomic.Int64
	delivered          [maxSteps]atomic.Int64
	duplicates         atomic.Int64
	reordered          atomic.Int64
	foreign            atomic.Int64 // message frames that are not the generator's
	gapFrames, gapped  atomic.Int64 // gap frames, and the messages they stand for
	connected          atomic.Int64
	joined             atomic.Int64
	joinRetries        atomic.Int64
	lastDelivery       atomic.Int64
	latency            Histogram // the current step's end-to-end latency
	// arrival is the same up to the message's arrival at the generator's
	// socket, which excludes the generator's own wait for a processor.
	arrival     Histogram
	window      Histogram // the same, for the last progress second
	ackLatency  Histogram
	dial        Histogram
	join        Histogram // from sending join to "joined"
	lag         Histogram // how late sends were, against their schedule
	late        atomic.Int64
	skipped     atomic.Int64 // sends dropped from the schedule at the hard stop
	writeErrors atomic.Int64

	closing atomic.Bool
	readers *readers // nil until connect

	mu          sync.Mutex
	errorCodes  map[string]int64
	closeCodes  map[string]int64
	dialErrors  map[string]int64
	disconnects int64
}

func newSession(cfg Config) *session {
	s := &session{
		cfg:        cfg,
		clock:      time.Now(),
		members:    make([]atomic.Int64, cfg.Rooms),
		errorCodes: map[string]int64{},
		closeCodes: map[string]int64{},
		dialErrors: map[string]int64{},
	}
	prefix := cfg.RoomPrefix
	if prefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		prefix = "b" + hex.EncodeToString(b[:])
	}
	for r := range cfg.Rooms {
		s.rooms = append(s.rooms, prefix+"-"+strconv.Itoa(r))
	}
	return s
}

// now returns the nanoseconds since the session started, on the monotonic
// clock: the time stamp in every text.
func (s *session) now() int64 { return int64(time.Since(s.clock)) }

func (s *session) noteError(code string) {
	s.mu.Lock()
	s.errorCodes[code]++
	s.mu.Unlock()
}

// noteEnd records why a connection ended, when the session did not end it.
func (s *session) noteEnd(c *client, err error) {
	if s.closing.Load() {
		return
	}
	code := "none"
	var ce closeError
	if errors.As(err, &ce) {
		code = strconv.Itoa(ce.code)
	}
	s.mu.Lock()
	s.closeCodes[code]++
	s.disconnects++
	s.mu.Unlock()
}

// wsURL turns a gateway base URL into its /ws URL for guest client i.
func wsURL(base string, i int) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("gateway url %q: %w", base, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	default:
		// Benchmarks run on loopback, where TLS would only measure TLS.
		return nil, fmt.Errorf("gateway url %q: want http:// or ws://", base)
	}
	u.Path = "/ws"
	u.RawQuery = "name=lg" + strconv.Itoa(i)
	return u, nil
}

// connect opens every client, DialConcurrency at a time, starts its reader
// and sends its join right away, as a browser does (gateways close a
// connection that joins nothing for a while). It returns how long the
// handshakes took; clients that failed are left out.
func (s *session) connect(ctx context.Context) (time.Duration, error) {
	for _, u := range s.cfg.URLs {
		if _, err := wsURL(u, 0); err != nil {
			return 0, err
		}
	}
	r, err := newReaders(s)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.readers = r
	s.mu.Unlock()

	sem := make(chan struct{}, s.cfg.DialConcurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range s.cfg.Clients {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return time.Since(start), ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.open(ctx, i)
		})
	}
	wg.Wait()
	took := time.Since(start)
	if s.connected.Load() == 0 {
		return took, errors.New("no client could connect")
	}
	return took, ctx.Err()
}

// open connects client i, starts reading it and sends its join.
func (s *session) open(ctx context.Context, i int) {
	u, _ := wsURL(s.cfg.URLs[i%len(s.cfg.URLs)], i)
	t0 := time.Now()
	conn, rest, err := dialWS(ctx, u, s.cfg.DialTimeout)
	if err != nil {
		s.dialFailed(err)
		return
	}
	s.dial.Record(int64(time.Since(t0)))
	c := &client{s: s, id: i, room: i % s.cfg.Rooms}
	if i < s.cfg.Publishers {
		c.pub = &publisher{c: c, id: i}
	}
	c.joinSent, c.joinTries = s.now(), 1
	if err := s.readers.take(c, conn); err != nil {
		s.dialFailed(err)
		return
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = c.conn.Close()
		return
	}
	s.clients = append(s.clients, c)
	if c.pub != nil {
		s.pubs = append(s.pubs, c.pub)
	}
	s.mu.Unlock()
	if err := s.readers.watch(c, rest); err != nil {
		s.noteEnd(c, err)
		return
	}
	s.connected.Add(1)
	c.sendJoin()
}

func (s *session) dialFailed(err error) {
	s.mu.Lock()
	s.dialErrors[shortError(err)]++
	s.mu.Unlock()
}

// shortError names an error class for the report without addresses.
func shortError(err error) string {
	var ne interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

// awaitJoins waits until every connected client has joined its room.
func (s *session) awaitJoins(ctx context.Context) error {
	deadline := time.NewTimer(s.cfg.JoinTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.joined.Load() < s.connected.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%d of %d clients joined within %v", s.joined.Load(), s.connected.Load(), s.cfg.JoinTimeout)
		case <-tick.C:
		}
	}
	return nil
}

// closeConns ends every connection, which ends the readers and any write
// in progress. It may be called more than once, from any goroutine.
func (s *session) closeConns() {
	s.closing.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		_ = c.conn.Close()
	}
}

// close ends every connection and its reading.
func (s *session) close() {
	s.closeConns()
	s.mu.Lock()
	r := s.readers
	s.mu.Unlock()
	if r != nil {
		r.stop()
	}
}

// publishStep runs one publish phase at rate for d: every publisher sends
// on an even schedule, offset from the others so that sends are spread
// over the interval. A publisher that falls behind sends at once
// (counting late sends); sends still due at d+1s are dropped (skipped).
func (s *session) publishStep(ctx context.Context, step int, rate float64, d time.Duration) {
	perPub := rate / float64(len(s.pubs))
	interval := time.Duration(float64(time.Second) / perPub)
	start := s.now()
	hardStop := start + int64(d+time.Second)
	var wg sync.WaitGroup
	for _, p := range s.pubs {
		phase := time.Duration(int64(interval) * int64(p.id) / int64(len(s.pubs)))
		wg.Go(func() {
			t := time.NewTimer(time.Hour)
			t.Stop()
			defer t.Stop()
			for k := 0; ; k++ {
				slot := phase + time.Duration(k)*interval
				if slot >= d {
					return
				}
				due := start + int64(slot)
				if wait := due - s.now(); wait > 0 {
					t.Reset(time.Duration(wait))
					select {
					case <-t.C:
					case <-ctx.Done():
						return
					}
				} else if ctx.Err() != nil {
					return
				}
				now := s.now()
				if now > hardStop {
					s.skipped.Add(int64((d - slot + interval - 1) / interval))
					return
				}
				lag := now - due
				s.lag.Record(lag)
				if lag > int64(s.cfg.LateAfter) {
					s.late.Add(1)
				}
				if err := p.send(step, k, now); err != nil {
					s.writeErrors.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
}

// expected returns the deliveries step should make: every acked message
// times the members of its room.
func (s *session) expected(step int, members []int64) int64 {
	var n int64
	for _, p := range s.pubs {
		n += p.acked[step].Load() * members[p.c.room]
	}
	return n
}

// drain waits until step's sends are all answered and its deliveries all
// made, or Drain passes. It returns when the last delivery arrived.
func (s *session) drain(ctx context.Context, step int, members []int64) {
	deadline := time.Now().Add(s.cfg.Drain)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		done := true
		for _, p := range s.pubs {
			if !p.answered(step) {
				done = false
				break
			}
		}
		if done && s.delivered[step].Load() >= s.expected(step, members) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *session) snapshotMembers() []int64 {
	m := make([]int64, len(s.members))
	for i := range s.members {
		m[i] = s.members[i].Load()
	}
	return m
}

// progress writes a line a second until ctx ends.
func (s *session) progress(ctx context.Context, phase func() string) {
	if s.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	lastWS, lastFrames := s.wsMessages.Load(), s.frames.Load()
	var lastDelivered, lastSent int64
	lastGW := readProcs(s.cfg.PIDs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		secs := now.Sub(last).Seconds()
		ws, frames := s.wsMessages.Load(), s.frames.Load()
		var delivered, sent int64
		for i := range s.delivered {
			delivered += s.delivered[i].Load()
		}
		s.mu.Lock()
		pubs := s.pubs
		s.mu.Unlock()
		for _, p := range pubs {
			for i := range p.sent {
				sent += p.sent[i].Load()
			}
		}
		gw := readProcs(s.cfg.PIDs)
		w := s.window.Summary()
		s.window.Reset()
		line := fmt.Sprintf("%-14s conns %6d joined %6d | sent/s %7.0f deliv/s %8.0f ws/s %8.0f frames/s %8.0f | p50 %6s p99 %6s max %6s | late %d",
			phase(), s.connected.Load(), s.joined.Load(),
			float64(sent-lastSent)/secs, float64(delivered-lastDelivered)/secs,
			float64(ws-lastWS)/secs, float64(frames-lastFrames)/secs,
			fmtMs(w.P50), fmtMs(w.P99), fmtMs(w.Max), s.late.Load())
		if len(gw) > 0 {
			line += fmt.Sprintf(" | gw cpu %4.0f%% rss %5.0f MB",
				100*float64(sumCPU(gw)-sumCPU(lastGW))/float64(now.Sub(last)), float64(sumRSS(gw))/(1<<20))
		}
		fmt.Fprintln(s.cfg.Progress, line)
		last, lastWS, lastFrames, lastDelivered, lastSent, lastGW = now, ws, frames, delivered, sent, gw
	}
}

func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms"
}
