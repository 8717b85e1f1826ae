package main

import (
	"math"
	"math/bits"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// hist is a log-linear histogram of nanosecond values: 32 sub-buckets per
// power of two (about 3 % resolution); the maximum is kept exactly.
type hist struct {
	counts [64 + 58*32]uint64
	n      uint64
	sum    float64
	max    int64
}

func histIndex(v int64) int {
	if v < 64 {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - 6
	top := v >> uint(shift)
	return 64 + (shift-1)*32 + int(top-32)
}

func histValue(i int) float64 {
	if i < 64 {
		return float64(i)
	}
	shift := (i-64)/32 + 1
	top := int64((i-64)%32 + 32)
	return float64(top<<uint(shift)) + float64(int64(1)<<uint(shift))/2
}

func (h *hist) add(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var acc uint64
	for i, c := range h.counts {
		acc += c
		if acc >= rank {
			v := histValue(i)
			if v > float64(h.max) {
				v = float64(h.max)
			}
			return v
		}
	}
	return float64(h.max)
}

type latencySummary struct {
	N    uint64  `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// summaryMs renders the histogram in milliseconds.
func (h *hist) summaryMs() latencySummary {
	if h.n == 0 {
		return latencySummary{}
	}
	ms := func(ns float64) float64 { return round3(ns / 1e6) }
	return latencySummary{
		N: h.n, Mean: ms(h.sum / float64(h.n)),
		P50: ms(h.quantile(0.5)), P90: ms(h.quantile(0.9)), P99: ms(h.quantile(0.99)),
		P999: ms(h.quantile(0.999)), Max: ms(float64(h.max)),
	}
}

// ---- /proc sampling ----

var clkTck = 100.0 // USER_HZ on Linux

type procSample struct {
	cpuS   float64
	rssKiB int64
	pssKiB int64
	pids   []int
}

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return string(b)
}

// statFields returns the fields of /proc/PID/stat after the command name.
func statFields(pid int) []string {
	s := readFile("/proc/" + strconv.Itoa(pid) + "/stat")
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// withDescendants returns the given pids and every live descendant.
func withDescendants(roots []int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	seen := map[int]bool{}
	var out []int
	var walk func(int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		if _, err := os.Stat("/proc/" + strconv.Itoa(p)); err != nil {
			return
		}
		out = append(out, p)
		for _, c := range children[p] {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	sort.Ints(out)
	return out
}

// procKiB is the value, in KiB, of the line "key:" of the /proc file at path
// (status: VmRSS; smaps_rollup: Pss); 0 when there is none.
func procKiB(path, key string) int64 {
	for _, line := range strings.Split(readFile(path), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line[len(key)+1:])
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

func statusKiB(pid int, key string) int64 {
	return procKiB("/proc/"+strconv.Itoa(pid)+"/status", key)
}

func selfRSS() int64 { return procKiB("/proc/self/status", "VmRSS") }

func pssKiB(pid int) int64 { return procKiB("/proc/"+strconv.Itoa(pid)+"/smaps_rollup", "Pss") }

// procCPU is the CPU time of pid and of its children that ended and were
// waited for (cutime, cstime): a child that ends during a measurement (a
// worker, a helper process) takes its time to its parent, not away.
func procCPU(pid int) float64 {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	total := 0.0
	for _, field := range f[11:15] { // utime stime cutime cstime
		v, _ := strconv.ParseFloat(field, 64)
		total += v
	}
	return total / clkTck
}

// sampleServer sums CPU and memory over the roots and their descendants.
// withMem also reads PSS (smaps_rollup is comparatively slow).
func sampleServer(roots []int, withMem bool) procSample {
	var ps procSample
	if len(roots) == 0 {
		return ps
	}
	ps.pids = withDescendants(roots)
	for _, p := range ps.pids {
		ps.cpuS += procCPU(p)
		if withMem {
			ps.rssKiB += statusKiB(p, "VmRSS")
			ps.pssKiB += pssKiB(p)
		}
	}
	return ps
}

// machineTicks returns (busy, total) jiffies over all cores from /proc/stat.
func machineTicks() (busy, total float64) {
	s := readFile("/proc/stat")
	line := s
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		line = s[:i]
	}
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, x := range f[1:] {
		v, _ := strconv.ParseFloat(x, 64)
		if i == 8 || i == 9 { // guest, guest_nice: already in user/nice
			continue
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
