package main

import (
	"sync/atomic"
)

// stop ends the readers and closes every subscriber connection.
func (rs *runState) stop() {
	atomic.StoreInt32(&rs.stopLoops, 1)
	rs.loopsWG.Wait()
	for i, p := range rs.pollers {
		p.closeAll(rs.streams[i])
	}
	if rs.lpCancel != nil {
		rs.lpCancel()
		rs.lpWG.Wait()
	}
}

// account turns the per-subscriber records into the result's figures.
func (rs *runState) account(res *result) {
	e := rs.e
	nc := len(e.centers)
	var st stats
	for _, p := range rs.pollers {
		mergeStats(&st, &p.st)
		res.Disconnects += atomic.LoadInt64(&p.disconnects)
	}
	for _, sh := range rs.lpShards {
		sh.mu.Lock()
		mergeStats(&st, &sh.st)
		sh.mu.Unlock()
	}
	res.Disconnects += atomic.LoadInt64(&rs.lpDisconn)
	var expected, unique, unexpected, dup, ooo int64
	for _, c := range e.centers {
		for s := range c.pubState {
			if c.pubState[s] == pubOK {
				expected += int64(c.pubSubs[s])
			}
		}
	}
	for _, s := range rs.subs {
		c := e.centers[s.center]
		dup += int64(s.dup)
		ooo += int64(s.ooo)
		if s.seen == nil {
			continue
		}
		for seq := 0; seq < e.perCenter; seq++ {
			if seq*nc+s.center >= rs.cfg.messages {
				break
			}
			if s.seen[seq/64]&(1<<uint(seq%64)) == 0 {
				continue
			}
			if c.pubState[seq] == pubOK {
				unique++
			} else {
				unexpected++
			}
		}
	}
	res.Expected = expected
	res.Deliveries = unique
	if lost := expected - unique; lost > 0 {
		res.Lost = lost
	}
	res.Duplicated, res.OutOfOrder = dup, ooo
	res.Unexpected = int64(st.unexpected) + unexpected
	res.Foreign = int64(st.foreign)
	res.Malformed = int64(st.malformed)
	res.Latency = st.lat.summaryMs()
	if unique > 0 && st.lastNs > rs.firstSend {
		w := float64(st.lastNs-rs.firstSend) / 1e9
		res.WindowS = r2(w*1000) / 1000
		res.DeliveriesPerS = r2(float64(unique) / w)
	}
}

func mergeStats(dst, src *stats) {
	dst.lat.merge(&src.lat)
	dst.unexpected += src.unexpected
	dst.foreign += src.foreign
	dst.malformed += src.malformed
	if src.lastNs > dst.lastNs {
		dst.lastNs = src.lastNs
	}
	if src.firstNs != 0 && (dst.firstNs == 0 || src.firstNs < dst.firstNs) {
		dst.firstNs = src.firstNs
	}
}
