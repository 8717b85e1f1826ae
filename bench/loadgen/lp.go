package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// lpShard holds the accounting of a group of long-poll subscribers.
type lpShard struct {
	mu sync.Mutex
	st stats
}

type lpSub struct {
	s         *sub
	hc        *httpConn
	uri       string
	connected chan error
	// raw (Nchan) cursor
	lastMod, etag string
	// json cursor
	cursor string
}

type lpAnswer struct {
	Messages []struct {
		Data *string `json:"data"`
	} `json:"messages"`
	LastID *string `json:"last_id"`
}

// lpWait bounds one poll: servers hold a long-poll for a while.
const lpWait = 10 * time.Minute

func newLPSub(s *sub, t *target, src net.IP, timeout time.Duration) *lpSub {
	hc := newHTTPConn(t.addr, t.host, lpWait)
	hc.local = src
	return &lpSub{s: s, hc: hc, uri: t.uri, connected: make(chan error, 1)}
}

// run polls until ctx ends, on one keep-alive connection.
func (ls *lpSub) run(ctx context.Context, e *engine, sh *lpShard, errs *errCounter, disconnects *int64, connTimeout time.Duration) {
	go func() {
		<-ctx.Done()
		ls.hc.shutdown()
	}()
	defer ls.hc.close()
	ls.hc.timeout = connTimeout
	err := ls.hc.dial()
	ls.hc.timeout = lpWait
	ls.connected <- err
	if err != nil {
		return
	}
	sep := "?"
	if strings.Contains(ls.uri, "?") {
		sep = "&"
	}
	for ctx.Err() == nil {
		uri := ls.uri
		hdr := "Origin: http://127.0.0.1\r\n"
		if e.cfg.lpFormat == "json" {
			if ls.cursor != "" {
				uri += sep + "since=" + url.QueryEscape(ls.cursor)
			}
		} else {
			if ls.lastMod != "" {
				hdr += "If-Modified-Since: " + ls.lastMod + "\r\n"
			}
			if ls.etag != "" {
				hdr += "If-None-Match: " + ls.etag + "\r\n"
			}
		}
		a, err := ls.hc.do("GET", uri, hdr, nil)
		now := time.Now().UnixNano()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			errs.add("longpoll: " + shortErr(err))
			atomic.AddInt64(disconnects, 1)
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		switch a.status {
		case 200:
		case 204, 304, 408:
			if c := a.headers["notifier-cursor"]; c != "" && e.cfg.lpFormat == "json" {
				ls.cursor = c
			}
			continue
		default:
			errs.add(fmt.Sprintf("longpoll: HTTP %d", a.status))
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		sh.mu.Lock()
		if e.cfg.lpFormat == "json" {
			var ans lpAnswer
			if err := json.Unmarshal(a.body, &ans); err != nil {
				sh.st.malformed++
			} else {
				for _, m := range ans.Messages {
					if m.Data == nil {
						sh.st.malformed++
						continue
					}
					e.onMessage(&sh.st, ls.s, []byte(*m.Data), now)
				}
			}
			if c := a.headers["notifier-cursor"]; c != "" {
				ls.cursor = c
			} else if ans.LastID != nil {
				ls.cursor = *ans.LastID
			}
		} else {
			ls.rawAnswer(e, &sh.st, a.headers["content-type"], a.body, now)
			if v := a.headers["last-modified"]; v != "" {
				ls.lastMod = v
			}
			if v := a.headers["etag"]; v != "" {
				ls.etag = v
			}
		}
		sh.mu.Unlock()
	}
}

// rawAnswer: one message per answer, or a multipart/mixed batch of them.
func (ls *lpSub) rawAnswer(e *engine, st *stats, ct string, body []byte, now int64) {
	boundary := multipartBoundary(ct)
	if boundary == "" {
		e.onFrame(st, ls.s, body, now)
		return
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if err != nil {
			if err != io.EOF {
				st.malformed++
			}
			return
		}
		b, err := io.ReadAll(part)
		if err != nil {
			st.malformed++
			return
		}
		e.onFrame(st, ls.s, b, now)
	}
}

// multipartBoundary returns the boundary of a multipart/* content type.
// It is read by hand: Nchan's boundaries hold '/', which strict media type
// parsing refuses unquoted.
func multipartBoundary(ct string) string {
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "multipart/") {
		return ""
	}
	for _, p := range strings.Split(ct, ";")[1:] {
		p = strings.TrimSpace(p)
		if len(p) > 9 && strings.EqualFold(p[:9], "boundary=") {
			return strings.Trim(p[9:], `"`)
		}
	}
	return ""
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func shortErr(err error) string {
	s := err.Error()
	if ue, ok := err.(*url.Error); ok {
		s = ue.Err.Error()
	}
	// drop addresses and ports so that equal errors aggregate
	for _, cut := range []string{"dial tcp ", "read tcp ", "write tcp "} {
		if i := strings.Index(s, cut); i >= 0 {
			if j := strings.LastIndex(s, ": "); j > i {
				s = s[:i] + strings.TrimSuffix(cut, " ") + ": " + s[j+2:]
			}
		}
	}
	return s
}
