package main

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type serverResult struct {
	Pids             []int   `json:"pids"`
	CPUS             float64 `json:"cpu_s"`
	CPUPct           float64 `json:"cpu_pct"`
	CPUConnectS      float64 `json:"cpu_connect_s"`
	CPUUsPerDelivery float64 `json:"cpu_us_per_delivery,omitempty"`
	CPUUsPerPublish  float64 `json:"cpu_us_per_publish,omitempty"`
	RSSKiB           int64   `json:"rss_kib"`
	PSSKiB           int64   `json:"pss_kib"`
	RSSBaseKiB       int64   `json:"rss_base_kib"`
	PSSBaseKiB       int64   `json:"pss_base_kib"`
	RSSPerConnKiB    float64 `json:"rss_per_conn_kib,omitempty"`
	PSSPerConnKiB    float64 `json:"pss_per_conn_kib,omitempty"`
}

type result struct {
	Scenario          string         `json:"scenario"`
	Transport         string         `json:"transport"`
	Frame             string         `json:"frame"`
	LPFormat          string         `json:"lp_format"`
	Centers           int            `json:"centers"`
	Size              int            `json:"size"`
	Concurrency       int            `json:"concurrency"`
	Rate              float64        `json:"rate"`
	Window            int            `json:"window"`
	SubsTarget        int            `json:"subscribers_target"`
	SubsConnected     int            `json:"subscribers_connected"`
	ConnectFailed     int            `json:"connect_failed"`
	ConnectTimeS      float64        `json:"connect_time_s"`
	ServerCounted     int            `json:"server_counted_subscribers"`
	Disconnects       int64          `json:"disconnects"`
	MessagesRequested int            `json:"messages_requested"`
	PublishedOK       int64          `json:"published_ok"`
	PublishErrors     int64          `json:"publish_errors"`
	PublishTimeS      float64        `json:"publish_time_s"`
	PublishesPerS     float64        `json:"publishes_per_s"`
	PublishLatency    latencySummary `json:"publish_latency_ms"`
	Expected          int64          `json:"expected_deliveries"`
	Deliveries        int64          `json:"deliveries"`
	WindowS           float64        `json:"window_s"`
	DeliveriesPerS    float64        `json:"deliveries_per_s"`
	Latency           latencySummary `json:"latency_ms"`
	Lost              int64          `json:"lost"`
	Duplicated        int64          `json:"duplicated"`
	OutOfOrder        int64          `json:"out_of_order"`
	Unexpected        int64          `json:"unexpected"`
	Foreign           int64          `json:"foreign"`
	Malformed         int64          `json:"malformed"`
	DrainTimedOut     bool           `json:"drain_timed_out"`
	ConnectedAtEnd    int            `json:"connected_at_end"`
	MeasuredS         float64        `json:"measured_s"`
	LoadgenCPUS       float64        `json:"loadgen_cpu_s"`
	LoadgenCPUPct     float64        `json:"loadgen_cpu_pct"`
	LoadgenRSSKiB     int64          `json:"loadgen_rss_kib"`
	MachineBusyPct    float64        `json:"machine_busy_pct"`
	OtherCPUPct       float64        `json:"other_cpu_pct"`
	Errors            map[string]int `json:"errors"`
	Label             string         `json:"label"`
	RunID             string         `json:"run_id"`
	Server            *serverResult  `json:"server,omitempty"`
}

type cpuMark struct {
	at          time.Time
	self        float64
	busy, total float64
	server      procSample
}

func markNow(pids []int, mem bool) cpuMark {
	m := cpuMark{at: time.Now(), self: selfCPU(), server: sampleServer(pids, mem)}
	m.busy, m.total = machineTicks()
	return m
}

// runState is everything one run holds.
type runState struct {
	cfg   *config
	e     *engine
	errs  errCounter
	logf  func(string, ...interface{})
	names []string

	pollers   []*poller
	streams   [][]*streamConn // per poller
	streamsMu sync.Mutex
	stopLoops int32
	loopsWG   sync.WaitGroup

	lpShards    []*lpShard
	lpCancel    context.CancelFunc
	lpWG        sync.WaitGroup
	lpDisconn   int64
	connected   int
	connectFail int
	connectS    float64
	subs        []*sub
	firstSend   int64
}

func run(cfg *config) (*result, int) {
	rs := &runState{cfg: cfg}
	rs.logf = func(f string, a ...interface{}) {
		if !cfg.quiet {
			fmt.Printf(f+"\n", a...)
		}
	}
	runID := randName(8)
	if cfg.centers == 1 {
		rs.names = []string{cfg.center}
	} else {
		for i := 0; i < cfg.centers; i++ {
			rs.names = append(rs.names, cfg.center+"-"+strconv.Itoa(i))
		}
	}
	rs.e = newEngine(cfg, runID, rs.names)
	res := &result{
		Scenario: cfg.scenario, Transport: cfg.transport, Frame: cfg.frame, LPFormat: cfg.lpFormat,
		Centers: cfg.centers, Size: cfg.size, Concurrency: cfg.concurrency, Rate: cfg.rate, Window: cfg.window,
		SubsTarget: cfg.n, MessagesRequested: cfg.messages, ServerCounted: -1, Label: cfg.label, RunID: runID,
	}
	if cfg.scenario == "publish" || cfg.scenario == "idle" {
		res.Window = 0
	}
	rs.logf("loadgen %s: run %s, %d centers (%s...), transport %s, %d subscribers, %d messages of %d bytes",
		cfg.scenario, runID, cfg.centers, rs.names[0], cfg.transport, cfg.n, cfg.messages, cfg.size)

	base := sampleServer(cfg.serverPids, true)
	if cfg.createURL != "" {
		rs.createCenters()
	}
	connStart := markNow(cfg.serverPids, false)
	if cfg.n > 0 {
		rs.connect()
	}
	connEnd := markNow(cfg.serverPids, false)
	res.SubsConnected = rs.connected
	res.ConnectFailed = rs.connectFail
	res.ConnectTimeS = math.Round(rs.connectS*1e4) / 1e4
	if cfg.n > 0 {
		rs.logf("connected %d/%d subscribers in %.2fs (%d failed)", rs.connected, cfg.n, rs.connectS, rs.connectFail)
	}
	if cfg.n > 0 && rs.connected == 0 {
		rs.stop()
		res.Errors = rs.errs.snapshot()
		rs.logf("no subscriber connected: nothing to measure")
		return res, 1
	}
	if cfg.countURL != "" && cfg.n > 0 {
		res.ServerCounted = rs.waitCount()
		rs.logf("server counts %d subscribers", res.ServerCounted)
	}

	var startM, endM cpuMark
	code := 0
	switch cfg.scenario {
	case "idle":
		startM = markNow(cfg.serverPids, false)
		time.Sleep(cfg.hold)
		endM = markNow(cfg.serverPids, true)
	default:
		if cfg.settle > 0 && cfg.n > 0 {
			time.Sleep(cfg.settle)
		}
		startM = markNow(cfg.serverPids, false)
		rs.publishAndDrain(res)
		endM = markNow(cfg.serverPids, true)
		if res.PublishedOK == 0 {
			code = 1
		}
	}
	res.ConnectedAtEnd = rs.connectedNow()
	rs.stop()
	rs.account(res)

	// CPU and memory over the measured window
	wall := endM.at.Sub(startM.at).Seconds()
	res.MeasuredS = r2(wall*1000) / 1000
	res.LoadgenCPUS = r2((endM.self-startM.self)*1000) / 1000
	res.LoadgenCPUPct = r2(100 * (endM.self - startM.self) / wall)
	res.LoadgenRSSKiB = selfRSS()
	if dt := endM.total - startM.total; dt > 0 {
		res.MachineBusyPct = r2(100 * (endM.busy - startM.busy) / dt)
	}
	var serverPct float64
	if len(cfg.serverPids) > 0 {
		s := &serverResult{Pids: endM.server.pids}
		if s.Pids == nil {
			s.Pids = []int{}
		}
		cpu := endM.server.cpuS - startM.server.cpuS
		s.CPUS = r2(cpu*1000) / 1000
		serverPct = 100 * cpu / wall
		s.CPUPct = r2(serverPct)
		s.CPUConnectS = r2((connEnd.server.cpuS-connStart.server.cpuS)*1000) / 1000
		if cfg.scenario == "fanout" && res.Deliveries > 0 {
			s.CPUUsPerDelivery = r2(cpu * 1e6 / float64(res.Deliveries))
		}
		if cfg.scenario == "publish" && res.PublishedOK > 0 {
			s.CPUUsPerPublish = r2(cpu * 1e6 / float64(res.PublishedOK))
		}
		s.RSSKiB, s.PSSKiB = endM.server.rssKiB, endM.server.pssKiB
		s.RSSBaseKiB, s.PSSBaseKiB = base.rssKiB, base.pssKiB
		if cfg.scenario == "idle" && rs.connected > 0 {
			s.RSSPerConnKiB = r2(float64(s.RSSKiB-base.rssKiB) / float64(rs.connected))
			s.PSSPerConnKiB = r2(float64(s.PSSKiB-base.pssKiB) / float64(rs.connected))
		}
		res.Server = s
	}
	res.OtherCPUPct = r2(res.MachineBusyPct*float64(runtime.NumCPU()) - res.LoadgenCPUPct - serverPct)
	res.Errors = rs.errs.snapshot()
	rs.report(res)
	return res, code
}

func (rs *runState) report(res *result) {
	cfg := rs.cfg
	if cfg.scenario != "idle" {
		rs.logf("published %d ok, %d errors in %.3fs: %.0f publishes/s; publish latency ms p50 %.3f p99 %.3f max %.3f",
			res.PublishedOK, res.PublishErrors, res.PublishTimeS, res.PublishesPerS,
			res.PublishLatency.P50, res.PublishLatency.P99, res.PublishLatency.Max)
	}
	if cfg.scenario == "fanout" {
		rs.logf("deliveries %d of %d expected in %.3fs: %.0f deliveries/s; latency ms p50 %.3f p90 %.3f p99 %.3f max %.3f",
			res.Deliveries, res.Expected, res.WindowS, res.DeliveriesPerS,
			res.Latency.P50, res.Latency.P90, res.Latency.P99, res.Latency.Max)
		rs.logf("lost %d, duplicated %d, out of order %d, unexpected %d, foreign %d, malformed %d, disconnects %d, drain timed out %v",
			res.Lost, res.Duplicated, res.OutOfOrder, res.Unexpected, res.Foreign, res.Malformed, res.Disconnects, res.DrainTimedOut)
	}
	rs.logf("loadgen cpu %.1f%% of a core, rss %d KiB; machine busy %.1f%%; others %.1f%% of a core",
		res.LoadgenCPUPct, res.LoadgenRSSKiB, res.MachineBusyPct, res.OtherCPUPct)
	if s := res.Server; s != nil {
		rs.logf("server pids %v: cpu %.2fs (%.1f%% of a core), connect phase %.2fs; rss %d KiB, pss %d KiB",
			s.Pids, s.CPUS, s.CPUPct, s.CPUConnectS, s.RSSKiB, s.PSSKiB)
		if cfg.scenario == "idle" {
			rs.logf("server memory per connection: pss %.2f KiB, rss %.2f KiB", s.PSSPerConnKiB, s.RSSPerConnKiB)
		}
	}
	for _, k := range sortedKeys(res.Errors) {
		rs.logf("error x%d: %s", res.Errors[k], k)
	}
}

func (rs *runState) apiHeaders(extra string) string {
	return rs.cfg.authHeader + extra
}

func (rs *runState) createCenters() {
	cfg := rs.cfg
	var wg sync.WaitGroup
	ch := make(chan string)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var hc *httpConn
			for name := range ch {
				t, _ := parseTarget(cfg.createURL, name, "")
				if hc == nil {
					hc = newHTTPConn(t.addr, t.host, cfg.reqTimeout)
					defer hc.close()
				}
				var body []byte
				extra := ""
				if cfg.createMethod == "PUT" || cfg.createMethod == "POST" {
					body = []byte("{}")
					extra = "Content-Type: application/json\r\n"
				}
				a, err := hc.do(cfg.createMethod, t.uri, rs.apiHeaders(extra), body)
				if err != nil {
					rs.errs.add("create: " + shortErr(err))
				} else if a.status/100 != 2 {
					rs.errs.add(fmt.Sprintf("create: HTTP %d", a.status))
				}
			}
		}()
	}
	for _, n := range rs.names {
		ch <- n
	}
	close(ch)
	wg.Wait()
}

func (rs *runState) srcIP(idx int, octet int) net.IP {
	y := 2 + idx/rs.cfg.connsPerIP
	if y > 254 {
		y = 2 + y%253
	}
	return net.IPv4(127, 0, byte(octet), byte(y)).To4()
}

// connect opens the subscribers, --connect-concurrency at a time.
func (rs *runState) connect() {
	cfg := rs.cfg
	var ob [1]byte
	crand.Read(ob[:])
	octet := 1 + int(ob[0])%250
	targets := make([]*target, len(rs.names))
	scheme, subURL := "", cfg.subURL
	switch cfg.transport {
	case "pusher":
		subURL = cfg.pusherURL // {center}, if any, is replaced; the channel is the center
	case "ws":
	default:
		scheme = "http"
	}
	for i, n := range rs.names {
		targets[i], _ = parseTarget(subURL, n, scheme)
	}
	loopback4 := !strings.HasPrefix(targets[0].addr, "[")
	ctx, cancel := context.WithTimeout(context.Background(), cfg.connTimeout)
	defer cancel()
	var lpCtx context.Context
	if cfg.transport == "longpoll" {
		lpCtx, rs.lpCancel = context.WithCancel(context.Background())
		for i := 0; i < 64; i++ {
			rs.lpShards = append(rs.lpShards, &lpShard{})
		}
	} else {
		nl := cfg.loops
		if nl <= 0 {
			nl = runtime.GOMAXPROCS(0)
			if nl > 4 {
				nl = 4
			}
		}
		ct := newConnTable()
		for i := 0; i < nl; i++ {
			p, err := newPoller(rs.e, ct)
			if err != nil {
				rs.errs.add("epoll: " + err.Error())
				return
			}
			rs.pollers = append(rs.pollers, p)
			rs.streams = append(rs.streams, nil)
			rs.loopsWG.Add(1)
			go p.run(&rs.stopLoops, &rs.loopsWG)
		}
	}
	var mu sync.Mutex
	var first, last time.Time
	first = time.Now()
	idxCh := make(chan int)
	var wg sync.WaitGroup
	workers := cfg.connConc
	if workers > cfg.n {
		workers = cfg.n
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idx := range idxCh {
				s := rs.e.newSub(idx)
				t := targets[s.center]
				var src net.IP
				if loopback4 {
					src = rs.srcIP(idx, octet)
				}
				timeout := cfg.reqTimeout
				if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
					timeout = time.Until(dl)
				}
				var err error
				if ctx.Err() != nil {
					err = fmt.Errorf("connect phase timed out")
				} else if cfg.transport == "longpoll" {
					ls := newLPSub(s, t, src, timeout)
					rs.lpWG.Add(1)
					go func() {
						defer rs.lpWG.Done()
						ls.run(lpCtx, rs.e, rs.lpShards[idx%len(rs.lpShards)], &rs.errs, &rs.lpDisconn, timeout)
					}()
					select {
					case err = <-ls.connected:
					case <-ctx.Done():
						err = fmt.Errorf("connect phase timed out")
					}
				} else {
					var c *streamConn
					channel := ""
					if cfg.transport == "pusher" {
						channel = rs.names[s.center]
					}
					c, err = dialStream(ctx, t, src, cfg.transport == "sse", channel, timeout)
					if err == nil {
						c.s = s
						pi := idx % len(rs.pollers)
						atomic.AddInt32(&rs.e.centers[s.center].subs, 1)
						rs.streamsMu.Lock()
						rs.streams[pi] = append(rs.streams[pi], c)
						rs.streamsMu.Unlock()
						if err = rs.pollers[pi].add(c); err != nil {
							atomic.AddInt32(&rs.e.centers[s.center].subs, -1)
						}
					}
				}
				mu.Lock()
				if err != nil {
					rs.connectFail++
					mu.Unlock()
					rs.errs.add("connect: " + shortErr(err))
					continue
				}
				if cfg.transport == "longpoll" {
					atomic.AddInt32(&rs.e.centers[s.center].subs, 1)
				}
				rs.connected++
				rs.subs = append(rs.subs, s)
				last = time.Now()
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < cfg.n; i++ {
		idxCh <- i
	}
	close(idxCh)
	wg.Wait()
	if rs.connected > 0 {
		rs.connectS = last.Sub(first).Seconds()
	}
}

func (rs *runState) connectedNow() int {
	n := 0
	for _, c := range rs.e.centers {
		n += int(atomic.LoadInt32(&c.subs))
	}
	return n
}

// waitCount polls --count-url until the server counts every subscriber.
func (rs *runState) waitCount() int {
	cfg := rs.cfg
	deadline := time.Now().Add(cfg.readyTimeout)
	hcs := map[string]*httpConn{}
	defer func() {
		for _, h := range hcs {
			h.close()
		}
	}()
	last := -1
	for {
		sum := 0
		okAll := true
		for _, name := range rs.names {
			t, _ := parseTarget(cfg.countURL, name, "")
			hc := hcs[t.addr]
			if hc == nil {
				hc = newHTTPConn(t.addr, t.host, cfg.reqTimeout)
				hcs[t.addr] = hc
			}
			a, err := hc.do("GET", t.uri, rs.apiHeaders("Accept: application/json\r\n"), nil)
			if err != nil {
				okAll = false
				continue
			}
			if a.status == 404 { // a channel that does not exist yet has no subscriber
				continue
			}
			var m map[string]interface{}
			if a.status/100 != 2 || json.Unmarshal(a.body, &m) != nil {
				okAll = false
				continue
			}
			switch v := m[cfg.countField].(type) {
			case float64:
				sum += int(v)
			case string:
				n, _ := strconv.Atoi(v)
				sum += n
			}
		}
		if okAll || sum > 0 {
			last = sum
		}
		if last >= rs.connectedNow() || time.Now().After(deadline) {
			if last < rs.connectedNow() {
				rs.errs.add("count: server counted fewer subscribers than connected")
			}
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publishAndDrain publishes the messages and waits for their deliveries.
func (rs *runState) publishAndDrain(res *result) {
	cfg, e := rs.cfg, rs.e
	uris := make([]string, len(rs.names))
	var pt *target
	for i, n := range rs.names {
		pt, _ = parseTarget(cfg.pubURL, n, "")
		uris[i] = pt.uri
	}
	extra := rs.apiHeaders("Content-Type: text/plain\r\n")
	var next, okN, errN int64
	var stop int32
	hists := make([]hist, cfg.concurrency)
	t0 := time.Now()
	deadline := t0.Add(cfg.maxTime)
	var lastAnswer int64
	var firstSend int64 = math.MaxInt64
	var mu sync.Mutex
	// waiters re-check their stall condition now and then
	tick := time.NewTicker(50 * time.Millisecond)
	tickDone := make(chan struct{})
	go func() {
		for {
			select {
			case <-tick.C:
				e.cond.Broadcast()
				if time.Now().After(deadline) {
					atomic.StoreInt32(&stop, 1)
				}
			case <-tickDone:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < cfg.concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			hc := newHTTPConn(pt.addr, pt.host, cfg.reqTimeout)
			defer hc.close()
			h := &hists[w]
			buf := make([]byte, 0, cfg.size+64)
			myFirst := int64(math.MaxInt64)
			var myLast int64
			for atomic.LoadInt32(&stop) == 0 {
				g := atomic.AddInt64(&next, 1) - 1
				if g >= int64(cfg.messages) {
					break
				}
				ci, seq := int(g%int64(len(rs.names))), int(g/int64(len(rs.names)))
				c := e.centers[ci]
				e.waitWindow(g, &stop)
				if cfg.rate > 0 {
					at := t0.Add(time.Duration(float64(g) / cfg.rate * 1e9))
					if d := time.Until(at); d > 0 {
						time.Sleep(d)
					}
				}
				if atomic.LoadInt32(&stop) != 0 {
					atomic.StoreUint32(&c.pubState[seq], pubFailed)
					e.markComplete(c, seq)
					break
				}
				send := time.Now().UnixNano()
				if send < myFirst {
					myFirst = send
				}
				buf = e.makeBody(buf, ci, seq, send)
				a, err := hc.do(cfg.pubMethod, uris[ci], extra, buf)
				now := time.Now().UnixNano()
				h.add(now - send)
				myLast = now
				if err == nil && a.status/100 == 2 {
					subs := atomic.LoadInt32(&c.subs)
					atomic.StoreInt32(&c.pubSubs[seq], subs)
					atomic.StoreUint32(&c.pubState[seq], pubOK)
					atomic.AddInt64(&okN, 1)
					if subs == 0 {
						e.markComplete(c, seq)
					}
				} else {
					atomic.StoreUint32(&c.pubState[seq], pubFailed)
					atomic.AddInt64(&errN, 1)
					if err != nil {
						rs.errs.add("publish: " + shortErr(err))
					} else {
						rs.errs.add(fmt.Sprintf("publish: HTTP %d", a.status))
					}
					if atomic.LoadInt32(&c.delivered[seq]) < atomic.LoadInt32(&c.subs) {
						e.markComplete(c, seq)
					}
				}
			}
			mu.Lock()
			if myFirst < firstSend {
				firstSend = myFirst
			}
			if myLast > lastAnswer {
				lastAnswer = myLast
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	var ph hist
	for i := range hists {
		ph.merge(&hists[i])
	}
	res.PublishedOK, res.PublishErrors = okN, errN
	if firstSend != math.MaxInt64 && lastAnswer > firstSend {
		res.PublishTimeS = float64(lastAnswer-firstSend) / 1e9
		res.PublishesPerS = r2(float64(okN) / res.PublishTimeS)
		res.PublishTimeS = r2(res.PublishTimeS*1000) / 1000
	}
	res.PublishLatency = ph.summaryMs()
	rs.firstSend = firstSend

	// drain
	var expected int64
	for _, c := range e.centers {
		for s := range c.pubState {
			if atomic.LoadUint32(&c.pubState[s]) == pubOK {
				expected += int64(atomic.LoadInt32(&c.pubSubs[s]))
			}
		}
	}
	if expected > 0 {
		lastN := atomic.LoadInt64(&e.uniqueTotal)
		lastAt := time.Now()
		for {
			u := atomic.LoadInt64(&e.uniqueTotal)
			if u >= expected {
				break
			}
			now := time.Now()
			if u != lastN {
				lastN, lastAt = u, now
			} else if now.Sub(lastAt) >= cfg.drainIdle {
				res.DrainTimedOut = true
				break
			}
			if now.After(deadline) {
				res.DrainTimedOut = true
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	tick.Stop()
	close(tickDone)
	atomic.StoreInt32(&stop, 1)
	e.cond.Broadcast()
}
