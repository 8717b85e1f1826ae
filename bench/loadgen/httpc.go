package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// httpConn is a minimal HTTP/1.1 client on one keep-alive connection: the
// publishers use it so that the request cost stays small next to the
// server's.
type httpConn struct {
	addr    string
	host    string
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
	wbuf    []byte
	local   net.IP // source address of the connection, if set

	mu      sync.Mutex // guards conn against shutdown from another goroutine
	stopped bool
}

type httpAnswer struct {
	status  int
	headers map[string]string // lower-case names
	body    []byte
}

func newHTTPConn(addr, host string, timeout time.Duration) *httpConn {
	return &httpConn{addr: addr, host: host, timeout: timeout}
}

func (h *httpConn) close() {
	h.mu.Lock()
	if h.conn != nil {
		h.conn.Close()
		h.conn = nil
	}
	h.mu.Unlock()
}

// shutdown closes the connection from another goroutine, unblocking a
// request in progress, and refuses new connections.
func (h *httpConn) shutdown() {
	h.mu.Lock()
	h.stopped = true
	if h.conn != nil {
		h.conn.Close()
	}
	h.mu.Unlock()
}

var errStopped = errors.New("stopped")

// dial opens the connection now (a request opens it when needed).
func (h *httpConn) dial() error {
	d := net.Dialer{Timeout: h.timeout}
	if h.local != nil {
		d.LocalAddr = &net.TCPAddr{IP: h.local}
	}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		c.Close()
		return errStopped
	}
	h.conn = c
	h.br = bufio.NewReaderSize(c, 16384)
	return nil
}

// do sends one request; extra is a block of "Name: value\r\n" lines.
func (h *httpConn) do(method, uri, extra string, body []byte) (*httpAnswer, error) {
	for attempt := 0; ; attempt++ {
		reused := h.conn != nil
		a, sent, err := h.try(method, uri, extra, body)
		if err == nil {
			return a, nil
		}
		h.close()
		// A kept-alive connection the server closed meanwhile: retry once
		// on a fresh one, but only when nothing of the answer was read.
		if reused && !sent && attempt == 0 {
			continue
		}
		return nil, err
	}
}

var keptHeaders = []string{"content-length", "transfer-encoding", "connection", "content-type",
	"last-modified", "etag", "notifier-cursor"}

var errNoAnswer = errors.New("connection closed before the answer")

func (h *httpConn) try(method, uri, extra string, body []byte) (*httpAnswer, bool, error) {
	if h.conn == nil {
		if err := h.dial(); err != nil {
			return nil, true, err
		}
	}
	h.conn.SetDeadline(time.Now().Add(h.timeout))
	w := h.wbuf[:0]
	w = append(w, method...)
	w = append(w, ' ')
	w = append(w, uri...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, h.host...)
	w = append(w, "\r\n"...)
	if body != nil || method == "POST" || method == "PUT" {
		w = append(w, "Content-Length: "...)
		w = strconv.AppendInt(w, int64(len(body)), 10)
		w = append(w, "\r\n"...)
	}
	w = append(w, extra...)
	w = append(w, "\r\n"...)
	w = append(w, body...)
	h.wbuf = w
	if _, err := h.conn.Write(w); err != nil {
		return nil, false, err
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && (err == io.EOF || isConnReset(err)) {
			return nil, false, errNoAnswer
		}
		return nil, true, err
	}
	a := &httpAnswer{headers: make(map[string]string, 4)}
	f := strings.Fields(string(line))
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return nil, true, fmt.Errorf("bad status line %q", strings.TrimSpace(string(line)))
	}
	a.status, err = strconv.Atoi(f[1])
	if err != nil {
		return nil, true, fmt.Errorf("bad status line %q", strings.TrimSpace(string(line)))
	}
	closeAfter := f[0] == "HTTP/1.0"
	for {
		l, err := h.br.ReadSlice('\n')
		if err != nil {
			return nil, true, err
		}
		l = bytes.TrimRight(l, "\r\n")
		if len(l) == 0 {
			break
		}
		i := bytes.IndexByte(l, ':')
		if i <= 0 {
			continue
		}
		// keep only the headers the loadgen reads (no allocation for others)
		for _, k := range keptHeaders {
			if len(k) == i && bytes.EqualFold(l[:i], []byte(k)) {
				a.headers[k] = string(bytes.TrimSpace(l[i+1:]))
				break
			}
		}
	}
	if strings.EqualFold(a.headers["connection"], "close") {
		closeAfter = true
	}
	noBody := method == "HEAD" || a.status == 204 || a.status == 304 || a.status/100 == 1
	switch {
	case noBody:
	case strings.Contains(strings.ToLower(a.headers["transfer-encoding"]), "chunked"):
		var out bytes.Buffer
		for {
			l, err := h.br.ReadSlice('\n')
			if err != nil {
				return nil, true, err
			}
			s := strings.TrimSpace(string(l))
			if i := strings.IndexByte(s, ';'); i >= 0 {
				s = s[:i]
			}
			n, err := strconv.ParseInt(s, 16, 64)
			if err != nil {
				return nil, true, fmt.Errorf("bad chunk size %q", s)
			}
			if n == 0 {
				for { // trailers
					l, err := h.br.ReadSlice('\n')
					if err != nil {
						return nil, true, err
					}
					if strings.TrimSpace(string(l)) == "" {
						break
					}
				}
				break
			}
			if _, err := io.CopyN(&out, h.br, n); err != nil {
				return nil, true, err
			}
			if _, err := h.br.Discard(2); err != nil {
				return nil, true, err
			}
		}
		a.body = out.Bytes()
	case a.headers["content-length"] != "":
		n, err := strconv.Atoi(a.headers["content-length"])
		if err != nil || n < 0 {
			return nil, true, fmt.Errorf("bad content-length")
		}
		a.body = make([]byte, n)
		if _, err := io.ReadFull(h.br, a.body); err != nil {
			return nil, true, err
		}
	default:
		b, err := io.ReadAll(h.br)
		if err != nil {
			return nil, true, err
		}
		a.body = b
		closeAfter = true
	}
	if closeAfter {
		h.close()
	}
	return a, true, nil
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}
