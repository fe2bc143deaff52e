// Package redistest runs a private redis-server for one test, so that the
// test may stop, pause or restart it without touching the machine's shared
// Redis, which other people's tests use at the same time.
//
// The server listens on 127.0.0.1 on a port of its own, keeps its files in a
// temporary directory, persists nothing (a restart starts empty, as a Redis
// without persistence does after a crash) and is killed when the test ends,
// or by the kernel if the test binary dies first.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Binary is the redis-server Start runs: the one in PATH, or else Debian's,
// /usr/bin/redis-server (apt-get install -y redis-server).
const Binary = "redis-server"

// readyTimeout bounds the wait for a started server to answer PING.
const readyTimeout = 15 * time.Second

// Server is a private redis-server. Its methods may be called from any
// goroutine, one at a time.
type Server struct {
	binary string
	dir    string
	port   int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been reaped
}

// Start runs a redis-server on a free port of 127.0.0.1 and waits until it
// answers PING. It fails the test when redis-server cannot be found or does
// not come up: a missing service is a failure, never a skip. The server is
// killed when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if _, serr := os.Stat("/usr/bin/redis-server"); serr != nil {
			tb.Fatalf("redistest: redis-server not found (apt-get install -y redis-server): %v", err)
		}
		bin = "/usr/bin/redis-server"
	}
	s := &Server{binary: bin, dir: tb.TempDir()}
	tb.Cleanup(func() {
		if err := s.Kill(); err != nil {
			tb.Errorf("redistest: %v", err)
		}
	})
	// The port was free a moment ago; another process may take it before
	// redis-server binds it, so a failed start is tried on another port.
	var errs []error
	for range 3 {
		if s.port, err = freePort(); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		if err = s.start(); err == nil {
			return s
		}
		errs = append(errs, err)
	}
	tb.Fatalf("redistest: %v", errors.Join(errs...))
	return nil
}

// URL returns the server's URL, redis://127.0.0.1:<port>/0. It stays the
// same across restarts.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// PID returns the server's process id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.exited() {
		return 0
	}
	return s.cmd.Process.Pid
}

// Restart starts the server again on the same port after Kill or Shutdown
// and waits until it answers PING. It starts empty.
func (s *Server) Restart() error {
	if err := s.start(); err != nil {
		return fmt.Errorf("restart redis: %w", err)
	}
	return nil
}

// Shutdown asks the server to stop without saving (SHUTDOWN NOSAVE), as an
// operator would, and waits until the process is gone. Its clients see their
// connections closed.
func (s *Server) Shutdown(ctx context.Context) error {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer func() { _ = rdb.Close() }()
	// SHUTDOWN answers nothing when it succeeds: the connection just ends.
	if err := rdb.ShutdownNoSave(ctx).Err(); err != nil && !isConnectionEnd(err) {
		return fmt.Errorf("shutdown redis at %s: %w", s.Addr(), err)
	}
	return s.wait(ctx)
}

// Kill kills the server with SIGKILL, as a crash would, and waits until it
// is gone. Killing a server that is not running does nothing.
func (s *Server) Kill() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	// A stopped (SIGSTOP) process dies of SIGKILL too.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill redis (pid %d): %w", cmd.Process.Pid, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("redis (pid %d) not reaped 10s after SIGKILL", cmd.Process.Pid)
	}
}

// Pause stops the server with SIGSTOP: it keeps its connections and its
// data but answers nothing, as a Redis stuck on a slow disk or a long
// command would. Resume lets it go on.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.exited() {
		return fmt.Errorf("signal redis with %v: not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal redis (pid %d) with %v: %w", s.cmd.Process.Pid, sig, err)
	}
	return nil
}

// start runs the process and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	if s.cmd != nil && !s.exited() {
		s.mu.Unlock()
		return errors.New("redis is running already")
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("open redis log: %w", err)
	}
	cmd := exec.Command(s.binary,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "no",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C in a terminal reaches the test
	// only; and killed by the kernel if the test binary dies without
	// cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		s.mu.Unlock()
		return fmt.Errorf("start %s: %w", s.binary, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer func() { _ = rdb.Close() }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			select {
			case <-done:
				// Something else answers on the port; ours could not bind it.
				return fmt.Errorf("redis-server on port %d exited at start (port taken?); see %s", s.port, filepath.Join(s.dir, "redis.log"))
			default:
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start; see %s", s.port, filepath.Join(s.dir, "redis.log"))
		case <-ctx.Done():
			return fmt.Errorf("redis-server on port %d not answering PING: %w", s.port, err)
		case <-tick.C:
		}
	}
}

// wait waits until the process has been reaped.
func (s *Server) wait(ctx context.Context) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for redis to exit: %w", ctx.Err())
	}
}

// exited reports whether the current process has been reaped; s.mu is held.
func (s *Server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// isConnectionEnd reports whether err says the connection ended, which is
// how a successful SHUTDOWN answers.
func isConnectionEnd(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.As(err, &ne)
}

// freePort returns a port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
