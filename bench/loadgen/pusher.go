package main

// Pusher Channels protocol 7 subscribers (--transport pusher): each
// connection opens --pusher-url (ws://HOST:PORT/app/KEY?protocol=7&...),
// reads pusher:connection_established, subscribes to the public channel
// named after its center and waits for its
// pusher_internal:subscription_succeeded, all in the connect phase; from
// then on the epoll loop reads its frames as any WebSocket's, and each text
// frame is an event {"event":..., "channel":..., "data":"<the published
// text>"} whose data string is accounted as a raw frame's payload is.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// pusherFrame is what a server frame of protocol 7 holds: slices of the
// frame itself when its strings have no escapes (the benchmark's messages
// never need one), copies unescaped otherwise.
type pusherFrame struct {
	event   []byte
	channel []byte
	data    []byte
	// dataString: data was a JSON string (its text in data); otherwise
	// data, when present, is the raw JSON value (a client event's object).
	dataString bool
	hasData    bool
}

// jsonSpace reports whether b is JSON whitespace.
func jsonSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

func skipSpace(p []byte, i int) int {
	for i < len(p) && jsonSpace(p[i]) {
		i++
	}
	return i
}

// scanString reads the JSON string that starts at p[i] ('"'): its text
// (unescaped when it has escapes) and the index past its closing quote.
func scanString(p []byte, i int) ([]byte, int, bool) {
	if i >= len(p) || p[i] != '"' {
		return nil, i, false
	}
	start := i + 1
	escaped := false
	for j := start; j < len(p); j++ {
		switch c := p[j]; {
		case c == '\\':
			escaped = true
			j++ // the escaped character (\uXXXX's digits are plain)
		case c == '"':
			if !escaped {
				return p[start:j], j + 1, true
			}
			var s string
			if json.Unmarshal(p[i:j+1], &s) != nil {
				return nil, j + 1, false
			}
			return []byte(s), j + 1, true
		case c < 0x20:
			return nil, j, false
		}
	}
	return nil, len(p), false
}

// skipValue steps over the JSON value at p[i] that is not a string
// (object, array, number, true, false, null): the index past it.
func skipValue(p []byte, i int) (int, bool) {
	depth := 0
	for i < len(p) {
		switch c := p[i]; c {
		case '"':
			_, j, ok := scanString(p, i)
			if !ok {
				return i, false
			}
			i = j
			if depth == 0 {
				return i, true
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i, true // the end of the enclosing object
			}
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case ',':
			if depth == 0 {
				return i, true
			}
		}
		i++
	}
	return i, depth == 0
}

// parsePusherFrame reads a frame of the protocol: a JSON object whose
// event, channel and data members are taken (others are skipped).
func parsePusherFrame(p []byte) (pusherFrame, bool) {
	var f pusherFrame
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return f, false
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return f, skipSpace(p, i+1) == len(p)
	}
	for {
		key, j, ok := scanString(p, i)
		if !ok {
			return f, false
		}
		i = skipSpace(p, j)
		if i >= len(p) || p[i] != ':' {
			return f, false
		}
		i = skipSpace(p, i+1)
		if i >= len(p) {
			return f, false
		}
		var val []byte
		isString := p[i] == '"'
		if isString {
			val, j, ok = scanString(p, i)
		} else {
			j, ok = skipValue(p, i)
			val = p[i:j]
		}
		if !ok || j == i {
			return f, false
		}
		switch string(key) {
		case "event":
			if !isString {
				return f, false
			}
			f.event = val
		case "channel":
			if isString {
				f.channel = val
			}
		case "data":
			f.data, f.dataString, f.hasData = val, isString, true
		}
		i = skipSpace(p, j)
		if i >= len(p) {
			return f, false
		}
		if p[i] == '}' {
			return f, f.event != nil && skipSpace(p, i+1) == len(p)
		}
		if p[i] != ',' {
			return f, false
		}
		i = skipSpace(p, i+1)
	}
}

// maskedFrame is a client text frame (masked, as RFC 6455 wants from a
// client) of payload.
func maskedFrame(op byte, payload []byte) []byte {
	n := len(payload)
	b := make([]byte, 0, 14+n)
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		for k := 7; k >= 0; k-- {
			b = append(b, byte(uint64(n)>>(8*k)))
		}
	}
	var key [4]byte
	rand.Read(key[:])
	b = append(b, key[:]...)
	for k, c := range payload {
		b = append(b, c^key[k&3])
	}
	return b
}

// pusherPong answers the server's pusher:ping (the pong frame is prepared
// once: its mask is the same each time, which a server does not mind).
var pusherPong = maskedFrame(1, []byte(`{"event":"pusher:pong","data":{}}`))

func subscribeFrame(channel string) []byte {
	return maskedFrame(1, []byte(`{"event":"pusher:subscribe","data":{"channel":`+strconv.Quote(channel)+`}}`))
}

// frameReader reads whole WebSocket messages from a blocking connection,
// during the handshake only; buf holds what was read and not yet used.
type frameReader struct {
	c   net.Conn
	buf []byte
}

// next returns the next text or binary message, answering pings.
func (r *frameReader) next() ([]byte, error) {
	var msg []byte
	inMsg := false
	tmp := make([]byte, 4096)
	for {
		op, fin, payload, used, ok := splitFrame(r.buf)
		if !ok {
			n, err := r.c.Read(tmp)
			r.buf = append(r.buf, tmp[:n]...)
			if n == 0 && err != nil {
				return nil, err
			}
			continue
		}
		payload = append([]byte(nil), payload...)
		r.buf = r.buf[used:]
		switch op {
		case 1, 2:
			if fin {
				return payload, nil
			}
			msg, inMsg = payload, true
		case 0:
			if inMsg {
				msg = append(msg, payload...)
				if fin {
					return msg, nil
				}
			}
		case 8:
			code := 0
			if len(payload) >= 2 {
				code = int(payload[0])<<8 | int(payload[1])
			}
			if len(payload) > 2 {
				return nil, fmt.Errorf("closed by the server: %d %s", code, payload[2:])
			}
			return nil, fmt.Errorf("closed by the server: %d", code)
		case 9:
			if _, err := r.c.Write(maskedFrame(10, payload)); err != nil {
				return nil, err
			}
		}
	}
}

// splitFrame reads the frame at the head of data (every WebSocket the load
// generator reads, native or Pusher): its opcode, FIN, payload
// (unmasked in place if masked) and length; ok false when incomplete.
func splitFrame(data []byte) (op byte, fin bool, payload []byte, used int, ok bool) {
	if len(data) < 2 {
		return
	}
	b0, b1 := data[0], data[1]
	hl := 2
	plen := int64(b1 & 0x7f)
	switch plen {
	case 126:
		hl = 4
		if len(data) < hl {
			return
		}
		plen = int64(data[2])<<8 | int64(data[3])
	case 127:
		hl = 10
		if len(data) < hl {
			return
		}
		plen = 0
		for k := 2; k < 10; k++ {
			plen = plen<<8 | int64(data[k])
		}
	}
	if b1&0x80 != 0 {
		hl += 4
	}
	if int64(len(data)) < int64(hl)+plen {
		return
	}
	payload = data[hl : int64(hl)+plen]
	if b1&0x80 != 0 {
		key := data[hl-4 : hl]
		for k := range payload {
			payload[k] ^= key[k&3]
		}
	}
	return b0 & 0x0f, b0&0x80 != 0, payload, hl + int(plen), true
}

// pusherError describes a pusher:error or pusher:subscription_error frame.
func pusherError(f pusherFrame) error {
	d := f.data
	if len(d) > 200 {
		d = d[:200]
	}
	return fmt.Errorf("%s %s", f.event, d)
}

// pusherSubscribe does the protocol's opening on c (the WebSocket
// handshake done, rest the bytes read past its answer): it returns the
// bytes read past the subscription's success.
func pusherSubscribe(c net.Conn, rest []byte, channel string) ([]byte, error) {
	r := &frameReader{c: c, buf: rest}
	p, err := r.next()
	if err != nil {
		return nil, err
	}
	f, ok := parsePusherFrame(p)
	if !ok {
		return nil, fmt.Errorf("pusher: the first frame is not an event")
	}
	if string(f.event) != "pusher:connection_established" {
		return nil, pusherError(f)
	}
	var est struct {
		SocketID string `json:"socket_id"`
	}
	if !f.dataString || json.Unmarshal(f.data, &est) != nil || est.SocketID == "" {
		return nil, fmt.Errorf("pusher: connection_established without a socket_id")
	}
	if _, err := c.Write(subscribeFrame(channel)); err != nil {
		return nil, err
	}
	for {
		p, err := r.next()
		if err != nil {
			return nil, err
		}
		f, ok := parsePusherFrame(p)
		if !ok {
			return nil, fmt.Errorf("pusher: a frame is not an event")
		}
		switch string(f.event) {
		case "pusher_internal:subscription_succeeded":
			if string(f.channel) == channel {
				return r.buf, nil
			}
		case "pusher:error", "pusher:subscription_error":
			return nil, pusherError(f)
		case "pusher:ping":
			if _, err := c.Write(pusherPong); err != nil {
				return nil, err
			}
		}
	}
}

var (
	pusherPrefix         = []byte("pusher:")
	pusherInternalPrefix = []byte("pusher_internal:")
)

// onPusher accounts a text frame of a Pusher subscriber: an event of its
// channel carries a message in its data; pusher:ping is answered; other
// frames of the protocol, and events of other channels, are unexpected.
func (e *engine) onPusher(st *stats, c *streamConn, p []byte, nowNs int64) {
	f, ok := parsePusherFrame(p)
	if !ok {
		st.unexpected++
		return
	}
	if bytes.HasPrefix(f.event, pusherPrefix) || bytes.HasPrefix(f.event, pusherInternalPrefix) {
		switch string(f.event) {
		case "pusher:ping":
			syscall.Write(c.fd, pusherPong)
		case "pusher:pong":
		default:
			st.unexpected++
		}
		return
	}
	if !f.dataString || string(f.channel) != e.centers[c.s.center].name {
		st.unexpected++
		return
	}
	e.onMessage(st, c.s, f.data, nowNs)
}
