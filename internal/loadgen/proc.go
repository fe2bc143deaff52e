package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/parleychat/parley/internal/cluster"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, which
// Linux fixes at 100 for user space on every architecture Go supports.
const userHZ = 100

// ProcSample is one reading of a process's CPU time and memory.
type ProcSample struct {
	PID int
	// CPU is user plus system time since the process started.
	CPU time.Duration
	// RSS and HWM (the peak RSS) are in bytes.
	RSS, HWM int64
	// Threads is the number of OS threads.
	Threads int
}

// ReadProc reads pid's CPU time (from /proc/<pid>/stat) and memory (from
// /proc/<pid>/status). pid 0 means this process.
func ReadProc(pid int) (ProcSample, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	s := ProcSample{PID: pid}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, fmt.Errorf("read process %d: %w", pid, err)
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses,
	// so count fields from the last ')'. utime and stime are fields 14 and
	// 15 of the line, 11 and 12 after the state.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("read process %d: malformed stat", pid)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return s, fmt.Errorf("read process %d: short stat", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return s, fmt.Errorf("read process %d: cpu times: %w", pid, err)
	}
	s.CPU = time.Duration(ut+st) * time.Second / userHZ

	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, fmt.Errorf("read process %d: %w", pid, err)
	}
	for line := range bytes.Lines(status) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch string(key) {
		case "VmRSS", "VmHWM":
			kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(val), []byte(" kB"))), 10, 64)
			if err != nil {
				return s, fmt.Errorf("read process %d: %s: %w", pid, key, err)
			}
			if string(key) == "VmRSS" {
				s.RSS = kb << 10
			} else {
				s.HWM = kb << 10
			}
		case "Threads":
			s.Threads, _ = strconv.Atoi(string(bytes.TrimSpace(val)))
		}
	}
	return s, nil
}

// readProcs reads every pid; a process that cannot be read counts as zero.
func readProcs(pids []int) []ProcSample {
	out := make([]ProcSample, len(pids))
	for i, pid := range pids {
		out[i], _ = ReadProc(pid)
		out[i].PID = pid
	}
	return out
}

// sumCPU and sumRSS add up a set of samples.
func sumCPU(ss []ProcSample) time.Duration {
	var t time.Duration
	for _, s := range ss {
		t += s.CPU
	}
	return t
}

func sumRSS(ss []ProcSample) int64 {
	var n int64
	for _, s := range ss {
		n += s.RSS
	}
	return n
}

// FindProcs returns the ids of the running processes whose command name
// (/proc/<pid>/comm) is one of names. cmd/parley-bench uses it to find the
// machine's RabbitMQ and Redis, whose CPU it reports beside the gateways'.
func FindProcs(names ...string) ([]int, error) {
	all, err := cluster.PIDs()
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, pid := range all {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err != nil {
			continue
		}
		c := string(bytes.TrimSpace(comm))
		for _, n := range names {
			if c == n {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// RaiseFileLimit raises this process's RLIMIT_NOFILE soft limit to at
// least want (and to the hard limit when that is higher), raising the hard
// limit too if want exceeds it and the process may (root). Processes
// started afterwards (the gateways of a local cluster) inherit it. It
// returns the soft limit now in force.
func RaiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	if want > lim.Max {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return lim.Cur, fmt.Errorf("raise RLIMIT_NOFILE to %d (hard limit %d; raise it with ulimit -Hn as root): %w",
				want, lim.Max, err)
		}
		return want, nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("set RLIMIT_NOFILE to %d: %w", lim.Cur, err)
	}
	return lim.Cur, nil
}

// machineCPU returns the busy CPU time of the whole machine since boot,
// from the first line of /proc/stat (all but idle and iowait).
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 6 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("read /proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read /proc/stat: %w", err)
		}
		// user nice system idle iowait irq softirq steal (guest time is
		// already counted in user).
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / userHZ, nil
}

// WaitQuiet waits, up to limit, until the machine's busy CPU over a
// two-second window is below maxBusy cores, so that a run does not start
// while other work (tests, builds) is loading the machine. It returns the
// busy cores of the last window.
func WaitQuiet(ctx context.Context, maxBusy float64, limit time.Duration) (float64, error) {
	deadline := time.Now().Add(limit)
	for {
		c0, err := machineCPU()
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		t := time.NewTimer(2 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
		c1, err := machineCPU()
		if err != nil {
			return 0, err
		}
		busy := (c1 - c0).Seconds() / time.Since(t0).Seconds()
		if busy < maxBusy || time.Now().After(deadline) {
			return busy, nil
		}
	}
}
