// Command loadgen is the load generator of the notifier benchmark: it
// connects WebSocket, SSE or long-poll subscribers to a server, publishes
// numbered messages over HTTP and accounts for every delivery (loss,
// duplicates, order, latency), along with the CPU and memory of the server.
package main

import (
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type config struct {
	scenario     string
	subURL       string
	pusherURL    string
	pubURL       string
	pubMethod    string
	createURL    string
	createMethod string
	countURL     string
	countField   string
	auth         string
	transport    string
	frame        string
	lpFormat     string
	center       string
	centers      int
	n            int
	messages     int
	size         int
	concurrency  int
	rate         float64
	connConc     int
	connTimeout  time.Duration
	readyTimeout time.Duration
	settle       time.Duration
	drainIdle    time.Duration
	maxTime      time.Duration
	hold         time.Duration
	reqTimeout   time.Duration
	label        string
	quiet        bool
	serverPids   []int
	connsPerIP   int
	window       int
	loops        int
	authHeader   string
}

type pidList struct{ p *[]int }

func (l pidList) String() string { return "" }
func (l pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad pid %q", f)
		}
		*l.p = append(*l.p, n)
	}
	return nil
}

func usage(msg string) {
	fmt.Fprintln(os.Stderr, "loadgen: "+msg)
	fmt.Fprintln(os.Stderr, "usage: loadgen fanout|idle|publish [flags]  (loadgen SCENARIO -h lists the flags)")
	os.Exit(2)
}

func parseArgs(args []string) *config {
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		usage("the first argument is the scenario")
	}
	cfg := &config{scenario: args[0]}
	switch cfg.scenario {
	case "fanout", "idle", "publish":
	default:
		usage("unknown scenario " + strconv.Quote(cfg.scenario))
	}
	fs := flag.NewFlagSet("loadgen "+cfg.scenario, flag.ContinueOnError)
	fs.StringVar(&cfg.subURL, "sub-url", "", "subscribe URL template (ws://...), {center} is replaced")
	fs.StringVar(&cfg.pusherURL, "pusher-url", "", "Pusher app URL (ws://HOST:PORT/app/KEY?protocol=7...) of --transport pusher: each connection subscribes to the channel named after its center")
	fs.StringVar(&cfg.pubURL, "pub-url", "", "publish URL template")
	fs.StringVar(&cfg.pubMethod, "pub-method", "POST", "publish method")
	fs.StringVar(&cfg.createURL, "create-url", "", "optional URL called once per center before subscribing")
	fs.StringVar(&cfg.createMethod, "create-method", "PUT", "method of --create-url")
	fs.StringVar(&cfg.countURL, "count-url", "", "optional JSON URL giving a center's subscriber count")
	fs.StringVar(&cfg.countField, "count-field", "subscribers", "field of the --count-url answer")
	fs.StringVar(&cfg.auth, "auth", "", "basic:USER:PASS for create, publish and count requests")
	fs.StringVar(&cfg.transport, "transport", "ws", "ws, sse, longpoll or pusher (WebSocket, Pusher protocol 7 on --pusher-url)")
	fs.StringVar(&cfg.frame, "frame", "raw", "raw (a frame is the message), json (its data field, or its messages' data) or any (every message body found in the frame, e.g. multiplexed frames)")
	fs.StringVar(&cfg.lpFormat, "lp-format", "raw", "long-poll protocol: raw (Last-Modified/Etag) or json (since=, messages)")
	fs.StringVar(&cfg.center, "center", "", "base center name (default bench-<random>)")
	fs.IntVar(&cfg.centers, "centers", 1, "number of centers")
	fs.IntVar(&cfg.n, "n", 0, "subscribers")
	fs.IntVar(&cfg.messages, "m", 0, "messages in all")
	fs.IntVar(&cfg.size, "size", 128, "message body bytes")
	fs.IntVar(&cfg.concurrency, "c", 0, "concurrent publishers (default 1 for fanout, 8 for publish)")
	fs.Float64Var(&cfg.rate, "rate", 0, "messages/s in all (0: as fast as answered)")
	fs.IntVar(&cfg.connConc, "connect-concurrency", 200, "concurrent connection attempts")
	fs.DurationVar(&cfg.connTimeout, "connect-timeout", 60*time.Second, "bound on the connect phase")
	fs.DurationVar(&cfg.readyTimeout, "ready-timeout", 30*time.Second, "bound on waiting for the server's count")
	fs.DurationVar(&cfg.settle, "settle", 500*time.Millisecond, "pause before publishing")
	fs.DurationVar(&cfg.drainIdle, "drain-idle", 2*time.Second, "stop draining after this long without a delivery")
	fs.DurationVar(&cfg.maxTime, "max-time", 120*time.Second, "bound on publish and drain")
	fs.DurationVar(&cfg.hold, "hold", 10*time.Second, "idle: how long to hold the connections")
	fs.DurationVar(&cfg.reqTimeout, "req-timeout", 10*time.Second, "bound on one HTTP request or handshake")
	fs.StringVar(&cfg.label, "label", "", "free text copied into the result")
	fs.BoolVar(&cfg.quiet, "q", false, "print only the RESULT line")
	fs.Var(pidList{&cfg.serverPids}, "server-pid", "server process to sample with its descendants (repeatable, or a comma list)")
	fs.IntVar(&cfg.connsPerIP, "conns-per-ip", 20000, "subscriber connections per source address 127.0.X.Y")
	fs.IntVar(&cfg.window, "window", 64, "fanout: most messages published and not yet delivered everywhere")
	fs.IntVar(&cfg.loops, "loops", 0, "epoll loops reading subscribers (default: GOMAXPROCS, at most 4)")
	if err := fs.Parse(args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		usage("unexpected argument " + strconv.Quote(fs.Arg(0)))
	}
	if cfg.concurrency <= 0 {
		cfg.concurrency = 1
		if cfg.scenario == "publish" {
			cfg.concurrency = 8
		}
	}
	switch cfg.transport {
	case "ws", "sse", "longpoll":
	case "pusher":
		cfg.frame = "pusher" // each frame is an event whose data is the message
	default:
		usage("--transport is ws, sse, longpoll or pusher")
	}
	if cfg.frame != "raw" && cfg.frame != "json" && cfg.frame != "any" && cfg.transport != "pusher" {
		usage("--frame is raw, json or any")
	}
	if cfg.lpFormat != "raw" && cfg.lpFormat != "json" {
		usage("--lp-format is raw or json")
	}
	if cfg.centers < 1 || cfg.size < 1 || cfg.n < 0 || cfg.messages < 0 || cfg.connConc < 1 || cfg.connsPerIP < 1 {
		usage("--centers, --size, --connect-concurrency and --conns-per-ip must be positive, -n and -m not negative")
	}
	if cfg.auth != "" {
		p := strings.SplitN(cfg.auth, ":", 3)
		if len(p) != 3 || p[0] != "basic" {
			usage("--auth is basic:USER:PASS")
		}
		cfg.authHeader = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(p[1]+":"+p[2])) + "\r\n"
	}
	if cfg.center == "" {
		cfg.center = "bench-" + randName(6)
	}
	switch cfg.scenario {
	case "fanout", "idle":
		if cfg.subURL == "" && cfg.transport != "pusher" {
			usage(cfg.scenario + " needs --sub-url")
		}
		if cfg.n < 1 {
			usage(cfg.scenario + " needs -n >= 1")
		}
		if cfg.scenario == "fanout" && cfg.pubURL == "" {
			usage("fanout needs --pub-url")
		}
		if cfg.scenario == "idle" && cfg.transport != "ws" && cfg.transport != "pusher" {
			usage("idle uses WebSocket subscribers only (--transport ws or pusher)")
		}
		if cfg.transport == "pusher" && cfg.pusherURL == "" {
			usage("--transport pusher needs --pusher-url")
		}
	case "publish":
		if cfg.pubURL == "" {
			usage("publish needs --pub-url")
		}
		cfg.n = 0
	}
	for _, u := range []string{cfg.subURL, cfg.pusherURL, cfg.pubURL, cfg.createURL, cfg.countURL} {
		if u == "" {
			continue
		}
		if _, err := parseTarget(u, "x", ""); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: "+err.Error())
			os.Exit(2)
		}
	}
	return cfg
}

func randName(n int) string {
	const abc = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	crand.Read(b)
	for i := range b {
		b[i] = abc[int(b[i])%len(abc)]
	}
	return string(b)
}

// target is a URL template rendered for one center.
type target struct {
	addr string // host:port to dial
	host string // Host header
	uri  string // path and query
}

// parseTarget renders tmpl for center; scheme, when set, replaces the URL's.
// Only loopback hosts are accepted.
func parseTarget(tmpl, center, scheme string) (*target, error) {
	raw := strings.ReplaceAll(tmpl, "{center}", url.PathEscape(center))
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %v", tmpl, err)
	}
	if scheme != "" {
		u.Scheme = scheme
	}
	h := u.Hostname()
	switch h {
	case "127.0.0.1", "localhost", "::1":
	default:
		return nil, fmt.Errorf("refusing %q: only loopback targets (127.0.0.1, localhost, ::1) are allowed", tmpl)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" || u.Scheme == "wss" {
			port = "443"
		}
	}
	dial := h
	if h == "localhost" {
		dial = "127.0.0.1"
	}
	return &target{addr: net.JoinHostPort(dial, port), host: u.Host, uri: u.RequestURI()}, nil
}

type errCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errCounter) add(k string) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	e.m[k]++
	e.mu.Unlock()
}

func (e *errCounter) snapshot() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

func main() {
	cfg := parseArgs(os.Args[1:])
	res, code := run(cfg)
	if res != nil {
		b, _ := json.Marshal(res)
		fmt.Println("RESULT " + string(b))
	}
	os.Exit(code)
}

func r2(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*100) / 100
}

func sortedKeys(m map[string]int) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
