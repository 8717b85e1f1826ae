package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// mockServer is a small in-process pub/sub server with one URL per center
// for WebSocket, SSE and JSON long-poll subscribers. dupEvery > 0 sends
// every dupEvery-th message twice; dropEvery > 0 never delivers every
// dropEvery-th message.
type mockServer struct {
	mu        sync.Mutex
	subs      map[string]map[chan []byte]bool
	history   map[string][][]byte
	dupEvery  int
	dropEvery int
	published int
	jsonWS    bool
	chunked   bool
	// Pusher endpoint (/app/KEY): pongs is how many pusher:pong it got;
	// pusherBatch > 1 writes that many events in one write (several
	// frames in one read).
	pongs       int
	pusherBatch int
}

func newMock() *mockServer {
	return &mockServer{subs: map[string]map[chan []byte]bool{}, history: map[string][][]byte{}}
}

func (m *mockServer) attach(center string) chan []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attachLocked(center)
}

// attachLocked is attach with m.mu held.
func (m *mockServer) attachLocked(center string) chan []byte {
	ch := make(chan []byte, 100000)
	if m.subs[center] == nil {
		m.subs[center] = map[chan []byte]bool{}
	}
	m.subs[center][ch] = true
	return ch
}

func (m *mockServer) detach(center string, ch chan []byte) {
	m.mu.Lock()
	delete(m.subs[center], ch)
	m.mu.Unlock()
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (m *mockServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/app/"):
		m.pusher(w, r, strings.TrimPrefix(r.URL.Path, "/app/"))
	case strings.HasPrefix(r.URL.Path, "/sub/"):
		m.subscribe(w, r, strings.TrimPrefix(r.URL.Path, "/sub/"))
	case strings.HasPrefix(r.URL.Path, "/pub/"):
		center := strings.TrimPrefix(r.URL.Path, "/pub/")
		if u, p, ok := r.BasicAuth(); !ok || u != "bench" || p != "s3cret" {
			http.Error(w, "auth", 401)
			return
		}
		switch r.Method {
		case "PUT":
			w.WriteHeader(201)
		case "GET":
			m.mu.Lock()
			n := len(m.subs[center])
			m.mu.Unlock()
			fmt.Fprintf(w, `{"subscribers": %d}`, n)
		case "POST":
			body, _ := io.ReadAll(r.Body)
			m.mu.Lock()
			m.published++
			k := m.published
			m.history[center] = append(m.history[center], body)
			for ch := range m.subs[center] {
				if m.dropEvery > 0 && k%m.dropEvery == 0 {
					continue
				}
				ch <- body
				if m.dupEvery > 0 && k%m.dupEvery == 0 {
					ch <- body
				}
			}
			m.mu.Unlock()
			w.WriteHeader(202)
		}
	default:
		http.NotFound(w, r)
	}
}

func (m *mockServer) subscribe(w http.ResponseWriter, r *http.Request, center string) {
	if websocket.IsWebSocketUpgrade(r) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		ch := m.attach(center)
		defer m.detach(center, ch)
		defer c.Close()
		go func() { // read (and ignore) client frames
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		c.WriteMessage(websocket.TextMessage, []byte("hello, not a bench message"))
		for b := range ch {
			if m.jsonWS {
				b, _ = json.Marshal(map[string]string{"id": "x", "data": string(b)})
			}
			if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
				return
			}
		}
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		ch := m.attach(center)
		defer m.detach(center, ch)
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		io.WriteString(w, "retry: 2000\nid: 0\n\n: ping\n\n")
		f.Flush()
		for {
			select {
			case b := <-ch:
				// split the event in two writes to exercise partial lines
				half := len(b) / 2
				io.WriteString(w, "id: 1\r\nevent: message\r\ndata: "+string(b[:half]))
				f.Flush()
				io.WriteString(w, string(b[half:])+"\r\n\r\n")
				f.Flush()
			case <-r.Context().Done():
				return
			}
		}
	}
	// JSON long-poll with since= (an index into the history)
	since := -1
	if s := r.URL.Query().Get("since"); s != "" {
		since, _ = strconv.Atoi(s)
	}
	m.mu.Lock()
	h := m.history[center]
	from := since
	if from < 0 {
		from = len(h)
	}
	if since >= 0 && since < len(h) {
		msgs := h[since:]
		m.mu.Unlock()
		m.answerLP(w, msgs, since+len(msgs))
		return
	}
	// Attached before the lock is let go: nothing published from now on
	// passes the poll by.
	ch := m.attachLocked(center)
	m.mu.Unlock()
	defer m.detach(center, ch)
	select {
	case <-ch:
		m.mu.Lock()
		h := m.history[center]
		m.mu.Unlock()
		m.answerLP(w, h[from:], len(h))
	case <-time.After(3 * time.Second):
		w.WriteHeader(204)
	case <-r.Context().Done():
	}
}

// pusher serves Pusher protocol 7 to the app of key "k3y": a public
// channel per center, its messages sent as events "message"; it pings
// each connection once, and sends one event of another channel and one
// frame of the protocol it does not expect.
func (m *mockServer) pusher(w http.ResponseWriter, r *http.Request, key string) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	if key != "k3y" || r.URL.Query().Get("protocol") != "7" {
		c.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher:error","data":{"code":4001,"message":"no such app"}}`))
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "no such app"))
		return
	}
	c.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}`))
	var sub struct {
		Event string `json:"event"`
		Data  struct {
			Channel string `json:"channel"`
		} `json:"data"`
	}
	if err := c.ReadJSON(&sub); err != nil || sub.Event != "pusher:subscribe" || sub.Data.Channel == "" {
		return
	}
	channel := sub.Data.Channel
	ch := m.attach(channel)
	defer m.detach(channel, ch)
	go func() { // count the pongs, ignore the rest
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if strings.Contains(string(p), `"pusher:pong"`) {
				m.mu.Lock()
				m.pongs++
				m.mu.Unlock()
			}
		}
	}()
	quoted, _ := json.Marshal(channel)
	c.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher_internal:subscription_succeeded","channel":`+string(quoted)+`,"data":"{}"}`))
	c.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher:ping","data":"{}"}`))
	c.WriteMessage(websocket.TextMessage, []byte(`{"event":"message","channel":"elsewhere","data":"B1 x"}`))
	c.WriteMessage(websocket.TextMessage, []byte(`{"event":"pusher:cache_miss","channel":`+string(quoted)+`}`))
	event := func(b []byte) []byte {
		data, _ := json.Marshal(string(b))
		return []byte(`{"event":"message","channel":` + string(quoted) + `,"data":` + string(data) + `}`)
	}
	for b := range ch {
		if m.pusherBatch <= 1 {
			if err := c.WriteMessage(websocket.TextMessage, event(b)); err != nil {
				return
			}
			continue
		}
		// several frames in one write, as the server's batches are
		buf := serverFrame(event(b))
		for k := 1; k < m.pusherBatch; k++ {
			select {
			case b2 := <-ch:
				buf = append(buf, serverFrame(event(b2))...)
				continue
			default:
			}
			break
		}
		if _, err := c.UnderlyingConn().Write(buf); err != nil {
			return
		}
	}
}

// serverFrame is an unmasked text frame of p.
func serverFrame(p []byte) []byte {
	n := len(p)
	var b []byte
	switch {
	case n < 126:
		b = []byte{0x81, byte(n)}
	case n < 1<<16:
		b = []byte{0x81, 126, byte(n >> 8), byte(n)}
	default:
		b = []byte{0x81, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return append(b, p...)
}

func (m *mockServer) answerLP(w http.ResponseWriter, msgs [][]byte, next int) {
	type env struct {
		ID   string `json:"id"`
		Data string `json:"data"`
	}
	var out struct {
		Messages []env  `json:"messages"`
		LastID   string `json:"last_id"`
	}
	for i, b := range msgs {
		out.Messages = append(out.Messages, env{ID: strconv.Itoa(next - len(msgs) + i + 1), Data: string(b)})
	}
	out.LastID = strconv.Itoa(next)
	w.Header().Set("Notifier-Cursor", strconv.Itoa(next))
	json.NewEncoder(w).Encode(out)
}

func testConfig(t *testing.T, srv *httptest.Server, scenario string, extra ...string) *config {
	base := strings.Replace(srv.URL, "http://", "ws://", 1)
	args := []string{scenario,
		"--sub-url", base + "/sub/{center}",
		"--pub-url", srv.URL + "/pub/{center}",
		"--create-url", srv.URL + "/pub/{center}",
		"--count-url", srv.URL + "/pub/{center}",
		"--auth", "basic:bench:s3cret",
		"--settle", "50ms", "--drain-idle", "500ms", "--max-time", "20s", "-q",
		"--connect-concurrency", "20",
	}
	return parseArgs(append(args, extra...))
}

func runOK(t *testing.T, cfg *config) *result {
	t.Helper()
	res, code := run(cfg)
	if code != 0 || res == nil {
		t.Fatalf("run failed: code %d, result %+v", code, res)
	}
	return res
}

func checkClean(t *testing.T, res *result, subs, msgs int, want int64) {
	t.Helper()
	if res.SubsConnected != subs || res.ConnectFailed != 0 {
		t.Errorf("connected %d of %d (%d failed): %v", res.SubsConnected, subs, res.ConnectFailed, res.Errors)
	}
	if res.ServerCounted != subs {
		t.Errorf("server counted %d, want %d", res.ServerCounted, subs)
	}
	if res.PublishedOK != int64(msgs) || res.PublishErrors != 0 {
		t.Errorf("published %d ok, %d errors: %v", res.PublishedOK, res.PublishErrors, res.Errors)
	}
	if res.Expected != want || res.Deliveries != want || res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 {
		t.Errorf("expected %d deliveries %d lost %d dup %d ooo %d (want %d, none lost)",
			res.Expected, res.Deliveries, res.Lost, res.Duplicated, res.OutOfOrder, want)
	}
	if res.Latency.N != uint64(want) || res.DeliveriesPerS <= 0 || res.DrainTimedOut {
		t.Errorf("latency n %d, deliveries/s %v, drain timed out %v", res.Latency.N, res.DeliveriesPerS, res.DrainTimedOut)
	}
	if res.Malformed != 0 || res.Foreign != 0 {
		t.Errorf("malformed %d foreign %d", res.Malformed, res.Foreign)
	}
}

func TestFanoutWebSocket(t *testing.T) {
	m := newMock()
	srv := httptest.NewServer(m)
	defer srv.Close()
	res := runOK(t, testConfig(t, srv, "fanout", "-n", "20", "-m", "200", "--centers", "3", "--size", "300"))
	checkClean(t, res, 20, 200, 7*67+7*67+6*66)
	if res.Unexpected != 20 { // the greeting frame of each connection
		t.Errorf("unexpected %d, want 20", res.Unexpected)
	}
}

func TestFanoutWebSocketJSON(t *testing.T) {
	// json: the data field of the frame; any: messages found wherever a
	// frame carries them (here inside the same JSON).
	for _, frame := range []string{"json", "any"} {
		t.Run(frame, func(t *testing.T) {
			m := newMock()
			m.jsonWS = true
			srv := httptest.NewServer(m)
			defer srv.Close()
			res := runOK(t, testConfig(t, srv, "fanout", "-n", "10", "-m", "100", "--frame", frame))
			checkClean(t, res, 10, 100, 1000)
		})
	}
}

func TestFanoutSSEAndLongPoll(t *testing.T) {
	for _, c := range []struct {
		name string
		n, m int
		want int64
		args []string
	}{
		{"sse", 20, 150, 1500, []string{"--transport", "sse", "--centers", "2"}},
		{"longpoll", 10, 100, 1000, []string{"--transport", "longpoll", "--lp-format", "json"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(newMock())
			defer srv.Close()
			args := append([]string{"-n", strconv.Itoa(c.n), "-m", strconv.Itoa(c.m)}, c.args...)
			res := runOK(t, testConfig(t, srv, "fanout", args...))
			checkClean(t, res, c.n, c.m, c.want)
		})
	}
}

func TestLossAndDuplicates(t *testing.T) {
	m := newMock()
	m.dupEvery = 10
	m.dropEvery = 7
	srv := httptest.NewServer(m)
	defer srv.Close()
	res := runOK(t, testConfig(t, srv, "fanout", "-n", "5", "-m", "70", "--window", "0"))
	// 70 messages: 10 never delivered (7, 14, ... 70), 7 twice (10, 20, ... 70 but
	// 70 is dropped): 6 duplicated per subscriber.
	if res.Expected != 350 || res.Lost != 50 || res.Duplicated != 30 || res.Deliveries != 300 {
		t.Errorf("expected %d lost %d duplicated %d deliveries %d; want 350, 50, 30, 300",
			res.Expected, res.Lost, res.Duplicated, res.Deliveries)
	}
	if !res.DrainTimedOut {
		t.Errorf("drain should have ended on --drain-idle")
	}
}

func TestPublish(t *testing.T) {
	m := newMock()
	srv := httptest.NewServer(m)
	defer srv.Close()
	res := runOK(t, testConfig(t, srv, "publish", "-m", "500", "-c", "4", "--centers", "10"))
	if res.PublishedOK != 500 || res.PublishErrors != 0 || res.PublishesPerS <= 0 || res.PublishLatency.N != 500 {
		t.Errorf("published %d errors %d rate %v latency n %d", res.PublishedOK, res.PublishErrors, res.PublishesPerS, res.PublishLatency.N)
	}
	if m.published != 500 {
		t.Errorf("server got %d publishes", m.published)
	}
}

func TestPublishErrorsAreNotExpected(t *testing.T) {
	m := newMock()
	srv := httptest.NewServer(m)
	defer srv.Close()
	cfg := testConfig(t, srv, "fanout", "-n", "3", "-m", "20")
	cfg.authHeader = "" // the server refuses every publish
	cfg.countURL, cfg.createURL = "", ""
	res, _ := run(cfg)
	if res.PublishedOK != 0 || res.PublishErrors != 20 || res.Expected != 0 || res.Lost != 0 {
		t.Errorf("ok %d errors %d expected %d lost %d", res.PublishedOK, res.PublishErrors, res.Expected, res.Lost)
	}
}

func TestIdle(t *testing.T) {
	m := newMock()
	srv := httptest.NewServer(m)
	defer srv.Close()
	res := runOK(t, testConfig(t, srv, "idle", "-n", "30", "--hold", "200ms"))
	if res.SubsConnected != 30 || res.ConnectedAtEnd != 30 || res.ServerCounted != 30 {
		t.Errorf("connected %d, at end %d, counted %d", res.SubsConnected, res.ConnectedAtEnd, res.ServerCounted)
	}
}

func TestBodyRoundTrip(t *testing.T) {
	cfg := &config{size: 64, messages: 10, window: 64}
	e := newEngine(cfg, "abcd1234", []string{"a", "b"})
	s := e.newSub(1)
	var st stats
	b := e.makeBody(nil, 1, 3, time.Now().UnixNano())
	if len(b) != 64 {
		t.Fatalf("body of %d bytes", len(b))
	}
	e.onMessage(&st, s, b, time.Now().UnixNano())
	e.onMessage(&st, s, b, time.Now().UnixNano())
	e.onMessage(&st, s, []byte("B1 zzzz9999 1 3 5 ......"), 0)
	e.onMessage(&st, s, b[:40], 0)
	if s.dup != 1 || st.lat.n != 1 || st.foreign != 1 || st.malformed != 1 {
		t.Errorf("dup %d lat %d foreign %d malformed %d", s.dup, st.lat.n, st.foreign, st.malformed)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	if _, err := parseTarget("ws://10.0.0.1:80/sub/{center}", "x", ""); err == nil {
		t.Error("a non-loopback host was accepted")
	}
	tg, err := parseTarget("ws://localhost:81/sub/{center}?a=b", "c 1", "http")
	if err != nil || tg.addr != "127.0.0.1:81" || tg.uri != "/sub/c%201?a=b" {
		t.Errorf("target %+v %v", tg, err)
	}
}

func TestHistogram(t *testing.T) {
	var h hist
	for i := int64(1); i <= 100000; i++ {
		h.add(i * 1000)
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		got, want := h.quantile(q), q*1e8
		if got < want*0.96 || got > want*1.04 {
			t.Errorf("q%v = %v, want about %v", q, got, want)
		}
	}
}

func TestTheWindowCountsEachMessageOnce(t *testing.T) {
	e := newEngine(&config{messages: 10, window: 4}, "run1", []string{"a", "b"})
	e.forgive(4, 2) // messages 0 and 1 (a/0, b/0) given up on after a stall
	if e.forgiven != 2 {
		t.Fatalf("forgiven %d, want 2", e.forgiven)
	}
	e.markComplete(e.centers[0], 0) // a/0 arrives after all: already out of the window
	e.markComplete(e.centers[0], 1) // message 2 (a/1) done
	e.markComplete(e.centers[0], 1) // reported twice, counted once
	if e.completed != 1 || e.forgiven != 2 {
		t.Fatalf("completed %d forgiven %d, want 1 and 2", e.completed, e.forgiven)
	}
	e.forgive(4, 5) // only b/1 is left in flight among the first four
	if e.forgiven != 3 {
		t.Fatalf("forgiven %d, want 3", e.forgiven)
	}
}

func TestParsePusherFrame(t *testing.T) {
	for _, c := range []struct {
		in                   string
		ok                   bool
		event, channel, data string
		dataString           bool
	}{
		{`{"event":"message","channel":"bench-1","data":"B1 abc 0 1 2 ...."}`, true, "message", "bench-1", "B1 abc 0 1 2 ....", true},
		// members in any order, with spaces
		{` { "data" : "x" , "channel":"c", "event" :"e" } `, true, "e", "c", "x", true},
		// escapes are undone
		{`{"event":"e","channel":"c","data":"a\"b\\c\n\u00e9\/"}`, true, "e", "c", "a\"b\\c\n\u00e9/", true},
		{`{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}`, true,
			"pusher:connection_established", "", `{"socket_id":"1.2","activity_timeout":120}`, true},
		// data not a string (a client event's object): kept raw
		{`{"event":"client-x","channel":"private-c","data":{"a":[1,"}",{"b":null}]},"user_id":"7"}`, true,
			"client-x", "private-c", `{"a":[1,"}",{"b":null}]}`, false},
		// other members skipped, whatever their type
		{`{"n":1.5e3,"t":true,"o":{"data":"no"},"event":"e","data":"yes"}`, true, "e", "", "yes", true},
		{`{"event":"pusher:cache_miss","channel":"c"}`, true, "pusher:cache_miss", "c", "", false},
		{`{"event":"e","data":"unterminated}`, false, "", "", "", false},
		{`{"event":"e","data":"x"`, false, "", "", "", false},
		{`{"event":"e","data":"x"} trailing`, false, "", "", "", false},
		{`{"data":"no event"}`, false, "", "", "", false},
		{`{"event":1}`, false, "", "", "", false},
		{`{"event":"e",}`, false, "", "", "", false},
		{`{"event":"e","data":}`, false, "", "", "", false},
		{`{"event":"e","data":"raw` + "\n" + `newline"}`, false, "", "", "", false},
		{`["event","e"]`, false, "", "", "", false},
		{`B1 abc 0 1 2 ....`, false, "", "", "", false},
		{``, false, "", "", "", false},
	} {
		f, ok := parsePusherFrame([]byte(c.in))
		if ok != c.ok {
			t.Errorf("%s: ok %v, want %v", c.in, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		if string(f.event) != c.event || string(f.channel) != c.channel || string(f.data) != c.data || f.dataString != c.dataString {
			t.Errorf("%s: event %q channel %q data %q (string %v)", c.in, f.event, f.channel, f.data, f.dataString)
		}
	}
}

func TestPusherFrameOfABenchMessageIsReadInPlace(t *testing.T) {
	cfg := &config{size: 128, messages: 10, window: 64}
	e := newEngine(cfg, "abcd1234", []string{"bench-a", "bench-b"})
	body := e.makeBody(nil, 1, 3, time.Now().UnixNano())
	frame := []byte(`{"event":"message","channel":"bench-b","data":"` + string(body) + `"}`)
	f, ok := parsePusherFrame(frame)
	if !ok || string(f.data) != string(body) || &f.data[0] != &frame[len(frame)-len(body)-2] {
		t.Fatalf("data %q not a slice of the frame", f.data)
	}
	if n := testing.AllocsPerRun(100, func() { parsePusherFrame(frame) }); n != 0 {
		t.Errorf("%v allocations per frame", n)
	}
	var st stats
	c := &streamConn{s: e.newSub(1), pusher: true, fd: -1}
	e.onPusher(&st, c, frame, time.Now().UnixNano())
	e.onPusher(&st, c, []byte(`{"event":"message","channel":"bench-a","data":"`+string(body)+`"}`), 0)
	e.onPusher(&st, c, []byte(`{"event":"pusher:error","data":{"code":null,"message":"x"}}`), 0)
	e.onPusher(&st, c, []byte(`not json`), 0)
	if st.lat.n != 1 || st.unexpected != 3 || c.s.dup != 0 {
		t.Errorf("latency n %d, unexpected %d, dup %d; want 1, 3, 0", st.lat.n, st.unexpected, c.s.dup)
	}
}

func TestMaskedFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 300, 70000} {
		p := []byte(strings.Repeat("x", n))
		b := maskedFrame(1, p)
		op, fin, payload, used, ok := splitFrame(b)
		if !ok || op != 1 || !fin || used != len(b) || string(payload) != string(p) || b[1]&0x80 == 0 {
			t.Errorf("n %d: op %d fin %v used %d/%d ok %v", n, op, fin, used, len(b), ok)
		}
		if _, _, _, _, ok := splitFrame(b[:len(b)-1]); ok && n > 0 {
			t.Errorf("n %d: an incomplete frame was taken whole", n)
		}
	}
}

func pusherArgs(srv *httptest.Server, key string, extra ...string) []string {
	base := strings.Replace(srv.URL, "http://", "ws://", 1)
	return append([]string{"--transport", "pusher",
		"--pusher-url", base + "/app/" + key + "?protocol=7&client=loadgen&version=1"}, extra...)
}

func TestFanoutPusher(t *testing.T) {
	// one event at a time, then several frames in one write
	for _, batch := range []int{1, 8} {
		t.Run(strconv.Itoa(batch), func(t *testing.T) {
			m := newMock()
			m.pusherBatch = batch
			srv := httptest.NewServer(m)
			defer srv.Close()
			res := runOK(t, testConfig(t, srv, "fanout", pusherArgs(srv, "k3y",
				"-n", "20", "-m", "200", "--centers", "3", "--size", "300")...))
			checkClean(t, res, 20, 200, 7*67+7*67+6*66)
			// each connection: an event of another channel and a pusher:cache_miss
			if res.Unexpected != 40 {
				t.Errorf("unexpected %d, want 40", res.Unexpected)
			}
			if res.Transport != "pusher" || res.Frame != "pusher" {
				t.Errorf("transport %q frame %q", res.Transport, res.Frame)
			}
			time.Sleep(100 * time.Millisecond)
			m.mu.Lock()
			pongs := m.pongs
			m.mu.Unlock()
			if pongs != 20 {
				t.Errorf("%d pusher:pong, want 20 (one per pusher:ping)", pongs)
			}
		})
	}
}

func TestPusherLossAndDuplicates(t *testing.T) {
	m := newMock()
	m.dupEvery = 10
	m.dropEvery = 7
	srv := httptest.NewServer(m)
	defer srv.Close()
	res := runOK(t, testConfig(t, srv, "fanout", pusherArgs(srv, "k3y", "-n", "5", "-m", "70", "--window", "0")...))
	if res.Expected != 350 || res.Lost != 50 || res.Duplicated != 30 || res.Deliveries != 300 {
		t.Errorf("expected %d lost %d duplicated %d deliveries %d; want 350, 50, 30, 300",
			res.Expected, res.Lost, res.Duplicated, res.Deliveries)
	}
}

func TestIdlePusher(t *testing.T) {
	m := newMock()
	srv := httptest.NewServer(m)
	defer srv.Close()
	res := runOK(t, testConfig(t, srv, "idle", pusherArgs(srv, "k3y", "-n", "30", "--hold", "200ms")...))
	if res.SubsConnected != 30 || res.ConnectedAtEnd != 30 || res.ServerCounted != 30 {
		t.Errorf("connected %d, at end %d, counted %d", res.SubsConnected, res.ConnectedAtEnd, res.ServerCounted)
	}
}

func TestPusherRefusedApp(t *testing.T) {
	m := newMock()
	srv := httptest.NewServer(m)
	defer srv.Close()
	cfg := testConfig(t, srv, "fanout", pusherArgs(srv, "wrong", "-n", "3", "-m", "5")...)
	res, code := run(cfg)
	if code == 0 || res.SubsConnected != 0 || res.ConnectFailed != 3 {
		t.Fatalf("code %d connected %d failed %d", code, res.SubsConnected, res.ConnectFailed)
	}
	for k := range res.Errors {
		if !strings.Contains(k, "pusher:error") || !strings.Contains(k, "4001") {
			t.Errorf("error %q does not tell the server's pusher:error", k)
		}
	}
}
