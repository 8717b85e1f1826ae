package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// streamConn is a WebSocket or SSE subscriber read by an epoll loop.
type streamConn struct {
	fd      int
	s       *sub
	sse     bool
	pusher  bool // a Pusher protocol subscriber (pusher.go)
	pending []byte
	closed  bool

	// WebSocket fragments
	frag       []byte
	fragActive bool

	// SSE
	chunked    bool
	chunkState int // 0 size line, 1 data, 2 after data, 3 ended
	chunkSize  int64
	sizeLine   []byte
	line       []byte
	data       []byte
	hasData    bool
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// handshake reads an HTTP answer head; it returns the status, the
// lower-cased headers and the bytes read past the head.
func readHead(c net.Conn) (int, map[string]string, []byte, error) {
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head := string(buf[:i])
			rest := append([]byte(nil), buf[i+4:]...)
			lines := strings.Split(head, "\r\n")
			f := strings.Fields(lines[0])
			if len(f) < 2 {
				return 0, nil, nil, fmt.Errorf("bad status line")
			}
			var status int
			fmt.Sscanf(f[1], "%d", &status)
			h := map[string]string{}
			for _, l := range lines[1:] {
				if j := strings.IndexByte(l, ':'); j > 0 {
					h[strings.ToLower(l[:j])] = strings.TrimSpace(l[j+1:])
				}
			}
			return status, h, rest, nil
		}
		if err != nil {
			return 0, nil, nil, err
		}
		if len(buf) > 65536 {
			return 0, nil, nil, fmt.Errorf("answer head too large")
		}
	}
}

// dialStream connects one subscriber, does the WebSocket or SSE handshake
// (and, when channel is set, the Pusher protocol's opening and the
// subscription to channel) and hands back a non-blocking raw socket.
func dialStream(ctx context.Context, t *target, src net.IP, sse bool, channel string, timeout time.Duration) (*streamConn, error) {
	d := net.Dialer{Timeout: timeout}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	c.SetDeadline(time.Now().Add(timeout))
	var req string
	var accept string
	if sse {
		req = "GET " + t.uri + " HTTP/1.1\r\nHost: " + t.host +
			"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nOrigin: http://127.0.0.1\r\n\r\n"
	} else {
		var k [16]byte
		rand.Read(k[:])
		key := base64.StdEncoding.EncodeToString(k[:])
		sum := sha1.Sum([]byte(key + wsGUID))
		accept = base64.StdEncoding.EncodeToString(sum[:])
		req = "GET " + t.uri + " HTTP/1.1\r\nHost: " + t.host +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
			"\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n\r\n"
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return nil, err
	}
	status, h, rest, err := readHead(c)
	if err != nil {
		return nil, err
	}
	sc := &streamConn{sse: sse, pending: rest}
	if sse {
		if status != 200 {
			return nil, fmt.Errorf("HTTP %d", status)
		}
		sc.chunked = strings.Contains(strings.ToLower(h["transfer-encoding"]), "chunked")
	} else {
		if status != 101 {
			return nil, fmt.Errorf("HTTP %d", status)
		}
		if h["sec-websocket-accept"] != accept {
			return nil, fmt.Errorf("bad Sec-WebSocket-Accept")
		}
		if channel != "" {
			if sc.pending, err = pusherSubscribe(c, rest, channel); err != nil {
				return nil, err
			}
			sc.pusher = true
		}
	}
	tc := c.(*net.TCPConn)
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var dupErr error
	err = rc.Control(func(fd uintptr) {
		sc.fd, dupErr = syscall.Dup(int(fd))
	})
	if err == nil {
		err = dupErr
	}
	if err != nil {
		return nil, err
	}
	c.Close()
	ok = true
	syscall.CloseOnExec(sc.fd)
	if err := syscall.SetNonblock(sc.fd, true); err != nil {
		syscall.Close(sc.fd)
		return nil, err
	}
	return sc, nil
}

// poller is one epoll loop reading many subscriber sockets.
type poller struct {
	e     *engine
	epfd  int
	conns *connTable
	st    stats
	// connection events, counted while the loop runs
	disconnects int64
}

type connTable struct {
	mu sync.Mutex
	m  []atomic.Pointer[streamConn]
}

func newConnTable() *connTable {
	var rl syscall.Rlimit
	n := 65536
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 1<<22 {
		n = int(rl.Cur) + 64
	}
	return &connTable{m: make([]atomic.Pointer[streamConn], n)}
}

func (ct *connTable) get(fd int) *streamConn {
	if fd < 0 || fd >= len(ct.m) {
		return nil
	}
	return ct.m[fd].Load()
}

func newPoller(e *engine, ct *connTable) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &poller{e: e, epfd: fd, conns: ct}, nil
}

func (p *poller) add(c *streamConn) error {
	if c.fd >= len(p.conns.m) {
		return fmt.Errorf("fd %d beyond the open-files limit", c.fd)
	}
	p.conns.m[c.fd].Store(c)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(c.fd)}
	return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev)
}

// run reads until stop is set. Each readiness event gets one read(2).
func (p *poller) run(stop *int32, wg *sync.WaitGroup) {
	defer wg.Done()
	events := make([]syscall.EpollEvent, 512)
	buf := make([]byte, 256*1024)
	for atomic.LoadInt32(stop) == 0 {
		n, err := syscall.EpollWait(p.epfd, events, 100)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			c := p.conns.get(int(events[i].Fd))
			if c == nil || c.closed {
				continue
			}
			r, err := syscall.Read(c.fd, buf)
			if r > 0 {
				c.onData(p, buf[:r], time.Now().UnixNano())
				continue
			}
			if err == syscall.EAGAIN || err == syscall.EINTR {
				continue
			}
			p.drop(c)
		}
	}
}

// drop closes a connection the server ended.
func (p *poller) drop(c *streamConn) {
	if c.closed {
		return
	}
	c.closed = true
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	p.conns.m[c.fd].Store(nil)
	syscall.Close(c.fd)
	atomic.AddInt32(&p.e.centers[c.s.center].subs, -1)
	atomic.AddInt64(&p.disconnects, 1)
}

// closeAll closes every connection left (the loop has stopped).
func (p *poller) closeAll(list []*streamConn) {
	for _, c := range list {
		if !c.closed {
			c.closed = true
			p.conns.m[c.fd].Store(nil)
			syscall.Close(c.fd)
		}
	}
	syscall.Close(p.epfd)
}

func (c *streamConn) onData(p *poller, b []byte, now int64) {
	if c.sse {
		c.onSSE(p, b, now)
		return
	}
	data := b
	fromPending := len(c.pending) > 0
	if fromPending {
		c.pending = append(c.pending, b...)
		data = c.pending
	}
	for {
		op, fin, payload, used, ok := splitFrame(data)
		if !ok {
			break
		}
		data = data[used:]
		switch op {
		case 1, 2:
			if fin {
				c.frame(p, payload, now)
			} else {
				c.frag = append(c.frag[:0], payload...)
				c.fragActive = true
			}
		case 0:
			if c.fragActive {
				c.frag = append(c.frag, payload...)
				if fin {
					c.frame(p, c.frag, now)
					c.fragActive = false
				}
			}
		case 8:
			p.drop(c)
			return
		case 9:
			if len(payload) <= 125 {
				pong := make([]byte, 0, 6+len(payload))
				pong = append(pong, 0x8a, 0x80|byte(len(payload)), 0, 0, 0, 0)
				pong = append(pong, payload...)
				syscall.Write(c.fd, pong)
			}
		}
	}
	if fromPending {
		n := copy(c.pending, data)
		c.pending = c.pending[:n]
	} else if len(data) > 0 {
		c.pending = append(c.pending[:0], data...)
	}
}

// frame accounts one whole message of a WebSocket.
func (c *streamConn) frame(p *poller, payload []byte, now int64) {
	if c.pusher {
		p.e.onPusher(&p.st, c, payload, now)
	} else {
		p.e.onFrame(&p.st, c.s, payload, now)
	}
}

// onSSE removes the chunked framing, if any, then splits lines.
func (c *streamConn) onSSE(p *poller, b []byte, now int64) {
	if c.pending != nil { // bytes read with the answer head
		b = append(c.pending, b...)
		c.pending = nil
	}
	if !c.chunked {
		c.sseFeed(p, b, now)
		return
	}
	for len(b) > 0 {
		switch c.chunkState {
		case 0:
			i := bytes.IndexByte(b, '\n')
			part := b
			if i >= 0 {
				part = b[:i]
			}
			c.sizeLine = append(c.sizeLine, part...)
			if i < 0 {
				return
			}
			b = b[i+1:]
			s := strings.TrimSpace(string(c.sizeLine))
			c.sizeLine = c.sizeLine[:0]
			if j := strings.IndexByte(s, ';'); j >= 0 {
				s = s[:j]
			}
			var n int64
			fmt.Sscanf(s, "%x", &n)
			if n == 0 {
				c.chunkState = 3
				return
			}
			c.chunkSize = n
			c.chunkState = 1
		case 1:
			n := int64(len(b))
			if n > c.chunkSize {
				n = c.chunkSize
			}
			c.sseFeed(p, b[:n], now)
			b = b[n:]
			c.chunkSize -= n
			if c.chunkSize == 0 {
				c.chunkState = 2
			}
		case 2:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return
			}
			b = b[i+1:]
			c.chunkState = 0
		default:
			return
		}
	}
}

// sseFeed splits the event stream into lines (a partial line waits in
// c.line for the next read).
func (c *streamConn) sseFeed(p *poller, b []byte, now int64) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.line = append(c.line, b...)
			return
		}
		line := b[:i]
		if len(c.line) > 0 {
			c.line = append(c.line, line...)
			line = c.line
		}
		b = b[i+1:]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		c.sseLine(p, line, now)
		c.line = c.line[:0]
	}
}

func (c *streamConn) sseLine(p *poller, line []byte, now int64) {
	if len(line) == 0 {
		if c.hasData {
			p.e.onFrame(&p.st, c.s, c.data, now)
			c.data = c.data[:0]
			c.hasData = false
		}
		return
	}
	if bytes.HasPrefix(line, []byte("data:")) {
		v := line[5:]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		if c.hasData {
			c.data = append(c.data, '\n')
		}
		c.data = append(c.data, v...)
		c.hasData = true
	}
}
