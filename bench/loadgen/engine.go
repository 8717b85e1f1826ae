package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Message bodies: "B1 <run id> <center index> <seq> <send unix ns> " padded
// with '.' to --size bytes. seq counts the messages of one center from 0.
const bodyMagic = "B1 "

type center struct {
	name      string
	subs      int32   // subscribers connected now
	delivered []int32 // per seq: subscribers that got it
	pubState  []uint32
	pubSubs   []int32  // subscribers connected when the publish succeeded
	fate      []uint32 // per seq: fateOpen, then fateDone or fateForgiven, once
}

const (
	pubNone uint32 = iota
	pubOK
	pubFailed
)

// What the publish window counts a message as: still in flight, done
// (delivered everywhere, or failed), or given up on after a stall. Each
// message leaves fateOpen once, so none is counted twice.
const (
	fateOpen uint32 = iota
	fateDone
	fateForgiven
)

// sub is one subscriber's accounting.
type sub struct {
	idx    int
	center int
	seen   []uint64
	maxSeq int64
	dup    uint32
	ooo    uint32
}

// stats are owned by one reader (an epoll loop, or a long-poll shard).
type stats struct {
	lat        hist
	unexpected uint64
	foreign    uint64
	malformed  uint64
	lastNs     int64
	firstNs    int64
}

type engine struct {
	cfg       *config
	runID     string
	centers   []*center
	perCenter int

	completed   int64 // messages delivered to every subscriber of their center (or failed)
	forgiven    int64
	uniqueTotal int64 // first deliveries
	mu          sync.Mutex
	cond        *sync.Cond
}

func newEngine(cfg *config, runID string, names []string) *engine {
	e := &engine{cfg: cfg, runID: runID}
	e.cond = sync.NewCond(&e.mu)
	nc := len(names)
	e.perCenter = (cfg.messages + nc - 1) / nc
	for _, n := range names {
		e.centers = append(e.centers, &center{
			name:      n,
			delivered: make([]int32, e.perCenter),
			pubState:  make([]uint32, e.perCenter),
			pubSubs:   make([]int32, e.perCenter),
			fate:      make([]uint32, e.perCenter),
		})
	}
	return e
}

func (e *engine) newSub(idx int) *sub {
	return &sub{idx: idx, center: idx % len(e.centers), maxSeq: -1}
}

// makeBody builds the body of message seq of center ci.
func (e *engine) makeBody(buf []byte, ci, seq int, sendNs int64) []byte {
	b := append(buf[:0], bodyMagic...)
	b = append(b, e.runID...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(ci), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, sendNs, 10)
	b = append(b, ' ')
	for len(b) < e.cfg.size {
		b = append(b, '.')
	}
	return b
}

// markComplete counts message seq of center c as done for the window,
// unless it was counted already (done, or given up on).
func (e *engine) markComplete(c *center, seq int) {
	if atomic.CompareAndSwapUint32(&c.fate[seq], fateOpen, fateDone) {
		atomic.AddInt64(&e.completed, 1)
	}
	e.cond.Broadcast()
}

// forgive gives up on the oldest n of the first g messages still in flight.
func (e *engine) forgive(g, n int64) {
	nc := int64(len(e.centers))
	for i := int64(0); i < g && n > 0; i++ {
		c := e.centers[i%nc]
		if atomic.CompareAndSwapUint32(&c.fate[i/nc], fateOpen, fateForgiven) {
			atomic.AddInt64(&e.forgiven, 1)
			n--
		}
	}
}

// parseField reads a decimal field ended by a space.
func parseField(p []byte, i int) (int64, int, bool) {
	var v int64
	start := i
	for i < len(p) && p[i] != ' ' {
		c := p[i]
		if c < '0' || c > '9' {
			return 0, i, false
		}
		v = v*10 + int64(c-'0')
		i++
	}
	if i == start || i >= len(p) {
		return 0, i, false
	}
	return v, i + 1, true
}

// onMessage accounts one message body received by s at nowNs.
func (e *engine) onMessage(st *stats, s *sub, p []byte, nowNs int64) {
	if len(p) < len(bodyMagic) || string(p[:len(bodyMagic)]) != bodyMagic {
		st.unexpected++
		return
	}
	i := len(bodyMagic)
	r := len(e.runID)
	if len(p) < i+r+1 || p[i+r] != ' ' {
		st.malformed++
		return
	}
	if string(p[i:i+r]) != e.runID {
		st.foreign++
		return
	}
	i += r + 1
	ci, i, ok1 := parseField(p, i)
	seq, i, ok2 := parseField(p, i)
	sendNs, i, ok3 := parseField(p, i)
	if !ok1 || !ok2 || !ok3 || int(ci) >= len(e.centers) || int(seq) >= e.perCenter {
		st.malformed++
		return
	}
	want := e.cfg.size
	if i > want {
		want = i
	}
	if len(p) != want {
		st.malformed++
		return
	}
	if int(ci) != s.center {
		st.unexpected++
		return
	}
	if s.seen == nil {
		s.seen = make([]uint64, (e.perCenter+63)/64)
	}
	w, bit := seq/64, uint64(1)<<uint(seq%64)
	if s.seen[w]&bit != 0 {
		s.dup++
		return
	}
	s.seen[w] |= bit
	if seq < s.maxSeq {
		s.ooo++
	} else {
		s.maxSeq = seq
	}
	st.lat.add(nowNs - sendNs)
	if st.firstNs == 0 {
		st.firstNs = nowNs
	}
	st.lastNs = nowNs
	atomic.AddInt64(&e.uniqueTotal, 1)
	c := e.centers[ci]
	n := atomic.AddInt32(&c.delivered[seq], 1)
	if n == atomic.LoadInt32(&c.subs) && atomic.LoadUint32(&c.pubState[seq]) != pubFailed {
		e.markComplete(c, int(seq))
	}
}

// envelope is what a JSON frame or a JSON long-poll answer may hold.
type envelope struct {
	Data     *string `json:"data"`
	Messages []struct {
		Data *string `json:"data"`
	} `json:"messages"`
}

// onJSON accounts a JSON frame: its data, or the data of its messages.
func (e *engine) onJSON(st *stats, s *sub, p []byte, nowNs int64) {
	var env envelope
	if err := json.Unmarshal(p, &env); err != nil {
		st.unexpected++
		return
	}
	if env.Data == nil && len(env.Messages) == 0 {
		st.unexpected++
		return
	}
	if env.Data != nil {
		e.onMessage(st, s, []byte(*env.Data), nowNs)
	}
	for _, m := range env.Messages {
		if m.Data == nil {
			st.malformed++
			continue
		}
		e.onMessage(st, s, []byte(*m.Data), nowNs)
	}
}

func (e *engine) onFrame(st *stats, s *sub, p []byte, nowNs int64) {
	switch e.cfg.frame {
	case "json":
		e.onJSON(st, s, p, nowNs)
	case "any":
		e.onAny(st, s, p, nowNs)
	default:
		e.onMessage(st, s, p, nowNs)
	}
}

// onAny accounts every message body a frame carries, wherever it is in it
// (a multiplexed frame, say): each starts with bodyMagic and is --size
// bytes long, its padding needing no escape in JSON. A frame with none is
// unexpected.
func (e *engine) onAny(st *stats, s *sub, p []byte, nowNs int64) {
	found := false
	for {
		i := bytes.Index(p, []byte(bodyMagic))
		if i < 0 {
			break
		}
		end := i + e.cfg.size
		if end > len(p) {
			st.malformed++
			return
		}
		found = true
		e.onMessage(st, s, p[i:end], nowNs)
		p = p[end:]
	}
	if !found {
		st.unexpected++
	}
}

// waitWindow blocks the publisher of message g while more than --window
// messages are published and not yet delivered everywhere. When deliveries
// make no progress for --drain-idle, the missing ones are given up on.
func (e *engine) waitWindow(g int64, stop *int32) {
	w := int64(e.cfg.window)
	if w <= 0 {
		return
	}
	inflight := func() int64 {
		return g - atomic.LoadInt64(&e.completed) - atomic.LoadInt64(&e.forgiven)
	}
	if inflight() < w {
		return
	}
	lastProgress := time.Now()
	lastSeen := atomic.LoadInt64(&e.uniqueTotal)
	e.mu.Lock()
	defer e.mu.Unlock()
	for inflight() >= w && atomic.LoadInt32(stop) == 0 {
		e.cond.Wait()
		if u := atomic.LoadInt64(&e.uniqueTotal); u != lastSeen {
			lastSeen, lastProgress = u, time.Now()
		} else if time.Since(lastProgress) > e.cfg.drainIdle {
			e.forgive(g, inflight()-w+1)
			return
		}
	}
}
