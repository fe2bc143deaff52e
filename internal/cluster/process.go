package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one child process, the leader of a process group of its own,
// and the goroutine that reaps it. The group is what gets signalled, so that
// whatever the process started (nginx's workers) goes with it, and a Ctrl-C
// in a terminal reaches the parent only, which then stops its children in
// order.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
	err  error         // what Wait returned; read only after done is closed
}

// startProcess starts path with args in a new process group, its output
// appended to logPath. deathSig is sent to it by the kernel if the parent
// dies without stopping it (a test binary that panics or times out), so
// that no process is orphaned even then.
func startProcess(name, path string, args, env []string, logPath string, truncate bool, deathSig syscall.Signal) (*process, error) {
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if truncate {
		flags |= os.O_TRUNC
	}
	logf, err := os.OpenFile(logPath, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process id, which is also its process group id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended and been reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signalGroup sends sig to every process of the group. A group that is gone
// already is not an error.
func (p *process) signalGroup(sig syscall.Signal) error {
	if err := syscall.Kill(-p.pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (process group %d) with %v: %w", p.name, p.pid(), sig, err)
	}
	return nil
}

// wait waits until the process has been reaped and returns how it ended,
// or returns ctx's error first.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("wait for %s (pid %d): %w", p.name, p.pid(), ctx.Err())
	}
}

// stop sends sig to the group and waits for the process to end, for at
// most grace; then it kills the whole group. It returns how the process
// ended, or the reason it had to be killed. Either way, when stop returns
// the process has been reaped and no member of its group is left.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	if !p.exited() {
		if err := p.signalGroup(sig); err != nil {
			return err
		}
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return errors.Join(p.err, p.reapGroup())
	case <-timer.C:
		return errors.Join(fmt.Errorf("%s did not stop within %v of %v, killed it", p.name, grace, sig), p.kill())
	}
}

// kill kills the whole group at once and waits until the process is reaped
// and no member of its group is left.
func (p *process) kill() error {
	if !p.exited() {
		if err := p.signalGroup(syscall.SIGKILL); err != nil {
			return err
		}
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.reapGroup()
	case <-timer.C:
		return fmt.Errorf("%s (pid %d) still not reaped 10s after SIGKILL", p.name, p.pid())
	}
}

// reapGroup makes sure no process of the group outlives its leader (an
// nginx worker whose master was killed would go on serving), killing any
// that is left and waiting for it to disappear.
func (p *process) reapGroup() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := GroupMembers(p.pid())
		if err != nil {
			return fmt.Errorf("check what is left of %s: %w", p.name, err)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of %s's group survive SIGKILL", left, p.name)
		}
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}

// GroupMembers returns the ids of the live processes in process group pgid
// (zombies do not count: they are dead and only wait for their parent). It
// reads /proc, so it works on Linux only; tests use it to check that nothing
// outlives a Cluster.
func GroupMembers(pgid int) ([]int, error) {
	all, err := PIDs()
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, pid := range all {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and
		// parentheses, so parse from the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// PIDs returns the ids of the processes running now, from /proc (Linux only).
// Any of them may be gone by the time the caller reads its files.
func PIDs() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
