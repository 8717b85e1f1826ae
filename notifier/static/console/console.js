/* The operator console of notifier, over the admin API (docs/console.rst).
 *
 * Plain ES2020, no framework and no build. The admin token lives in this
 * tab's sessionStorage only and goes out in the Authorization header of
 * fetch(); it is never put in a URL, a cookie or localStorage. Text that
 * comes from the server is always set with textContent, never as HTML.
 *
 * Where messages go: a form's mistakes next to their field (cleared as soon
 * as the field changes); what an action did next to it, for a few seconds;
 * the banner at the top for trouble with the server or the network only,
 * cleared on every change of view.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "notifier.console.token";
  /** The ranges the charts can show: the history's range, its span, how often it is asked again. */
  const RANGES = {
    "5m": { seconds: 300, text: "last 5 minutes", poll: 1000 },
    "1h": { seconds: 3600, text: "last hour", poll: 1000 },
    "24h": { seconds: 86400, text: "last 24 hours", poll: 60000 },
  };
  const STATS_MS = 1000;          // /admin/v1/stats, for the tiles
  const CENTERS_MS = 3000;        // the page of centers on screen, asked again
  const CENTER_MS = 3000;         // a center's settings, subscribers and members, asked again
  const PAGE = 50;                // centers in a page
  const HISTORY_PAGE = 50;        // retained messages in a page
  const TAIL_KEEP = 500;          // entries kept in a center's list
  const TAIL_RETRY_MS = 2000;     // before reconnecting a tail that was cut
  const TYPING_MS = 300;          // the search waits for typing to pause
  const NOTE_MS = 5000;           // what an action did stays this long
  const TRANSPORTS = [["websocket", "WebSocket"], ["sse", "SSE"], ["longpoll", "Long-poll"], ["pusher", "Pusher"]];
  const COLORS = {
    websocket: "#1f6feb", sse: "#e8710a", longpoll: "#8957e5", pusher: "#bf3989", in: "#1a7f37", out: "#1f6feb",
  };

  const $ = (id) => document.getElementById(id);

  // small helpers

  /** An element with a class, text and attributes; children appended in order. */
  function el(tag, options = {}, ...children) {
    const node = document.createElement(tag);
    if (options.className) node.className = options.className;
    if (options.text !== undefined) node.textContent = String(options.text);
    for (const [name, value] of Object.entries(options.attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  const pad = (n, width = 2) => String(n).padStart(width, "0");

  // One way of showing a date and time, the browser's (its locale and time
  // zone), everywhere; the exact UTC time in its title.
  const DATE_TIME = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const HOUR_MINUTE = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const NUMBER = new Intl.NumberFormat();

  const isoUtc = (seconds) => new Date(seconds * 1000).toISOString();
  const number = (n) => NUMBER.format(n);

  /** A <time> of *seconds* (Unix), in the one format; "—" for none. */
  function when(seconds, format = DATE_TIME) {
    if (typeof seconds !== "number") return el("span", { className: "muted", text: "—" });
    const iso = isoUtc(seconds);
    return el("time", { text: format.format(new Date(seconds * 1000)), attrs: { datetime: iso, title: `${iso} (UTC)` } });
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "—";
    const s = Math.floor(seconds);
    const days = Math.floor(s / 86400), hours = Math.floor((s % 86400) / 3600);
    const minutes = Math.floor((s % 3600) / 60), secs = s % 60;
    if (days > 0) return `${days} d ${hours} h`;
    if (hours > 0) return `${hours} h ${pad(minutes)} min`;
    if (minutes > 0) return `${minutes} min ${pad(secs)} s`;
    return `${secs} s`;
  }

  function rate(value) {
    if (value == null) return "–";
    return value >= 100 ? String(Math.round(value)) : value.toFixed(1);
  }

  const plural = (n, one, many) => `${number(n)} ${n === 1 ? one : many}`;

  function fromHash(part) {
    try { return decodeURIComponent(part); } catch (e) { return part; }
  }

  const enc = encodeURIComponent;
  const publisherPath = (publisher) => `/admin/v1/publishers/${enc(publisher)}`;
  const centerPath = (publisher, center) => `${publisherPath(publisher)}/centers/${enc(center)}`;
  const centerRoute = (publisher, center) => `#/publishers/${enc(publisher)}/centers/${enc(center)}`;

  /** A message's text as shown: pretty-printed when it is a JSON object or array. */
  function shownData(text) {
    const trimmed = typeof text === "string" ? text.trim() : "";
    if (trimmed[0] === "{" || trimmed[0] === "[") {
      try { return { text: JSON.stringify(JSON.parse(trimmed), null, 2), json: true }; } catch (e) { /* text */ }
    }
    return { text: String(text ?? ""), json: false };
  }

  // the banner: trouble with the server or the network

  const statusBox = $("status");
  let statusTimer = null;
  let statusSource = null;

  function say(kind, text, { source = null, seconds = 0 } = {}) {
    clearTimeout(statusTimer);
    statusBox.dataset.kind = kind;
    statusBox.setAttribute("role", kind === "error" ? "alert" : "status");
    $("status-text").textContent = text;
    statusBox.hidden = false;
    statusSource = source;
    if (seconds > 0) statusTimer = setTimeout(hush, seconds * 1000);
  }

  function hush(source) {
    if (source !== undefined && statusSource !== source) return;
    clearTimeout(statusTimer);
    statusBox.hidden = true;
    $("status-text").textContent = "";
    statusSource = null;
  }

  $("status-close").addEventListener("click", () => hush());

  // what an action did, next to it, for a few seconds

  const noteTimers = {};

  function note(id, text, kind = "ok") {
    const box = $(id);
    clearTimeout(noteTimers[id]);
    box.dataset.kind = kind;
    box.textContent = text;
    noteTimers[id] = setTimeout(() => { box.textContent = ""; }, NOTE_MS);
  }

  function clearNote(id) {
    clearTimeout(noteTimers[id]);
    $(id).textContent = "";
  }

  // a form's mistakes, at their field: `${field.id}-error`, named by the field's aria-describedby

  function fieldError(field, text) {
    const box = $(`${field.id}-error`);
    box.textContent = text;
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }

  function clearFieldError(field) {
    if (field.getAttribute("aria-invalid") !== "true") return;
    field.removeAttribute("aria-invalid");
    $(`${field.id}-error`).textContent = "";
  }

  function clearFormErrors(form) {
    for (const field of form.querySelectorAll("[aria-invalid=true]")) clearFieldError(field);
  }

  // a field that changes is no longer wrong
  for (const type of ["input", "change"]) {
    document.addEventListener(type, (event) => {
      if (event.target instanceof Element) clearFieldError(event.target);
    });
  }

  // the admin API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Thrown where the token was refused: the page is back at sign-in already. */
  class SignedOut extends Error {}

  /** Whether *error* is the server's answer about what was asked (a 4xx), rather than trouble. */
  const refusal = (error) => error instanceof ApiError && error.status >= 400 && error.status < 500;

  async function errorOf(response) {
    let code = `http_${response.status}`;
    let message = `HTTP ${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") code = body.error;
      if (body && typeof body.message === "string") message = body.message;
    } catch (e) { /* not JSON: the status line says it */ }
    return new ApiError(response.status, code, message);
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(method, path, { json, text, signal, raw = false } = {}) {
    const secret = token();
    if (!secret) throw new SignedOut();
    const headers = { Authorization: `Bearer ${secret}` };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (text !== undefined) {
      headers["Content-Type"] = "text/plain; charset=utf-8";
      body = text;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, signal, cache: "no-store", credentials: "omit" });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "unreachable", `the server did not answer (${error.message})`);
    }
    if (response.status === 401) {
      const refused = await errorOf(response);
      expire(refused);
      throw new SignedOut();
    }
    if (!response.ok) throw await errorOf(response);
    if (raw) return response;
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    return type.includes("json") ? response.json() : response.text();
  }

  /** Show *error* in the banner, saying what was being done. */
  function report(error, doing, source) {
    if (error instanceof SignedOut || error.name === "AbortError") return;
    const code = error instanceof ApiError && error.status !== 0 ? ` (${error.code})` : "";
    say("error", `${doing} failed: ${error.message}${code}`, { source });
  }

  // signing in and out

  let session = 0;            // bumped on every sign-in and sign-out: stale loops stop
  let view = null;            // {stop()} of the view on screen

  function signedIn() {
    return token() !== null;
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("signin-token");
    const candidate = input.value.trim();
    clearFieldError(input);
    if (!candidate) {
      fieldError(input, "Give the admin token.");
      return;
    }
    const button = $("signin-submit");
    button.disabled = true;
    try {
      const response = await fetch("/admin/v1/stats", {
        headers: { Authorization: `Bearer ${candidate}` }, cache: "no-store", credentials: "omit",
      });
      if (response.status === 401) {
        const refused = await errorOf(response);
        fieldError(input, refused.code === "admin_disabled"
          ? "This server has no admin token configured ([api] admin_token): the console cannot be used."
          : "That token is not this server's admin token.");
        input.select();
        return;
      }
      if (!response.ok) throw await errorOf(response);
      const stats = await response.json();
      sessionStorage.setItem(TOKEN_KEY, candidate);
      input.value = "";
      hush();
      start(stats);
    } catch (error) {
      report(error, "Checking the token");
    } finally {
      button.disabled = false;
    }
  }

  function start(stats) {
    session += 1;
    latest = null;
    previous = null;
    if (stats) record(stats);
    document.body.classList.add("signed-in");
    $("nav").hidden = false;
    $("whoami").hidden = false;
    pollStats(session);
    if (!/^#\/./.test(location.hash)) history.replaceState(null, "", "#/overview");
    route();
  }

  /** Forget the token and show sign-in, with *message* when given. */
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    session += 1;
    leaveView();
    clearTimeout(pollTimer);
    document.body.classList.remove("signed-in");
    $("nav").hidden = true;
    $("whoami").hidden = true;
    $("node-badge").textContent = "";
    hideSecret();
    closeDialogs();
    if (message) say("info", message); else hush();
    showView("signin", "Sign in");
    $("signin-token").focus();
  }

  /** A 401 after sign-in: the token was changed or removed on the server. */
  function expire(refused) {
    if (!signedIn()) return;
    signOut(`The server refused the admin token (${refused.message}): sign in again.`);
  }

  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut("Signed out. The token was forgotten by this tab."));

  // views and routes: #/overview[?range=], #/publishers, #/publishers/{name}[?prefix=&sort=],
  // #/publishers/{name}/centers/{center}; #/tail/{publisher}/{center} (the older address of a center's page)

  const VIEWS = ["signin", "overview", "publishers", "centers", "center"];

  function showView(name, title) {
    for (const other of VIEWS) $(`view-${other}`).hidden = other !== name;
    document.title = `${title} · notifier console`;
    const section = name === "centers" || name === "center" ? "publishers" : name;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function leaveView() {
    closeDialogs();
    if (view) view.stop();
    view = null;
  }

  /** The hash as [path parts, query parameters]. */
  function where() {
    const hash = location.hash.replace(/^#\/?/, "");
    const mark = hash.indexOf("?");
    const path = mark < 0 ? hash : hash.slice(0, mark);
    return [path.split("/").map(fromHash), new URLSearchParams(mark < 0 ? "" : hash.slice(mark + 1))];
  }

  /** Say *params* in the address (for a reload or a link), without changing view. */
  function remember(path, params) {
    const query = params.toString();
    history.replaceState(null, "", query ? `${path}?${query}` : path);
  }

  function route() {
    if (!signedIn()) {
      showView("signin", "Sign in");
      return;
    }
    leaveView();
    hush();   // the banner is about what was on screen
    const [parts, params] = where();
    if (parts[0] === "tail" && parts[1] && parts[2]) {
      history.replaceState(null, "", centerRoute(parts[1], parts[2]));
      view = centerView(parts[1], parts[2]);
    } else if (parts[0] === "publishers" && parts[1] && parts[2] === "centers" && parts[3]) {
      view = centerView(parts[1], parts[3]);
    } else if (parts[0] === "publishers" && parts[1]) {
      view = centersView(parts[1], params);
    } else if (parts[0] === "publishers") {
      view = publishersView();
    } else {
      view = overviewView(params);
    }
  }

  // the skip link moves the focus; it is no route
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    $("main").focus();
  });

  window.addEventListener("hashchange", () => {
    route();
    if (signedIn()) $("main").focus({ preventScroll: true });
  });

  // dialogs: resolve true when confirmed

  function ask(dialog, name, { check = () => true, prepare = () => {} } = {}) {
    for (const slot of dialog.querySelectorAll(".dlg-name")) slot.textContent = name;
    prepare();
    const form = dialog.querySelector("form");
    return new Promise((resolve) => {
      const submit = (event) => {
        event.preventDefault();
        if (check()) dialog.close("confirm");
      };
      const closed = () => {
        form.removeEventListener("submit", submit);
        dialog.removeEventListener("close", closed);
        resolve(dialog.returnValue === "confirm");
      };
      form.addEventListener("submit", submit);
      dialog.addEventListener("close", closed);
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  function closeDialogs() {
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close("");
  }

  document.addEventListener("click", (event) => {
    const closer = event.target.closest("[data-close]");
    if (closer) closer.closest("dialog").close("");
  });

  // this node's figures, every second while signed in: the tiles

  let previous = null;   // {t, in, out} of the sample before
  let latest = null;     // {stats, inRate, outRate}
  let pollTimer = null;

  function record(stats) {
    const now = Date.now() / 1000;
    let inRate = null, outRate = null;
    if (previous && now > previous.t) {
      const dt = now - previous.t;
      if (stats.messages_in >= previous.in) inRate = (stats.messages_in - previous.in) / dt;
      if (stats.messages_out >= previous.out) outRate = (stats.messages_out - previous.out) / dt;
    }
    previous = { t: now, in: stats.messages_in, out: stats.messages_out };
    latest = { stats, inRate, outRate };
    $("node-badge").textContent = stats.node ? `node ${stats.node}` : "";
  }

  async function pollStats(mine) {
    try {
      const stats = await api("GET", "/admin/v1/stats");
      if (mine !== session) return;
      record(stats);
      hush("stats");
      if (overview) overview.tiles();
    } catch (error) {
      if (mine !== session) return;
      report(error, "Reading this node's figures", "stats");
    } finally {
      if (mine === session && signedIn()) pollTimer = setTimeout(() => pollStats(mine), STATS_MS);
    }
  }

  // overview: the tiles (this node, now) and the charts (the cluster's history, kept by the server)

  let overview = null;   // the overview on screen: {tiles()}
  const charts = {};
  let chartSpan = null;  // [from, to] of the charts' time axis

  function tile(id, value, shown) {
    const node = $(id);
    node.dataset.value = value == null ? "" : String(value);
    node.querySelector(".tile-value").textContent = shown;
  }

  function renderTiles() {
    if (!latest) return;
    const { stats, inRate, outRate } = latest;
    const c = stats.connections || {};
    for (const [key] of TRANSPORTS) tile(`tile-${key}`, c[key], String(c[key] ?? "–"));
    tile("tile-in-rate", inRate, rate(inRate));
    tile("tile-out-rate", outRate, rate(outRate));
    tile("tile-uptime", stats.uptime, duration(stats.uptime));
    tile("tile-publishers", stats.publishers, String(stats.publishers ?? "–"));
    tile("tile-centers", stats.centers, stats.centers == null ? "–" : number(stats.centers));
    tile("tile-centers-live", stats.centers_live, stats.centers_live == null ? "–" : number(stats.centers_live));
    tile("tile-dropped", stats.dropped_subscribers, String(stats.dropped_subscribers ?? "–"));
    $("tile-uptime").title = stats.uptime != null ? `${Math.floor(stats.uptime)} seconds` : "";
  }

  function nodeLine(stats, nodes) {
    const line = $("node-line");
    line.textContent = "";
    const node = el("code", { text: stats?.node || "?" });
    const many = nodes && nodes.length > 1;
    if (stats?.store === "redis" || many) {
      line.append("This page talks to node ", node, ": the tiles are this node's; the charts add up ",
        many ? plural(nodes.length, "node", "nodes") : "the cluster's nodes", ".");
    } else {
      line.append("Node ", node, ` · store ${stats?.store || "?"}`);
    }
  }

  function makeChart(container, series, integers) {
    const width = Math.max(200, container.clientWidth);
    const options = {
      width,
      height: window.innerWidth < 640 ? 190 : 230,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: (u, min, max) => chartSpan || [min, max] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.2 : (integers ? 5 : 1)] },
      },
      axes: [
        {
          stroke: "#5d6b7e", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dde3ea" },
          // the page's one time format, not the chart library's own
          values: (u, ticks) => {
            const span = ticks.length > 1 ? ticks[ticks.length - 1] - ticks[0] : 0;
            const format = span > 600 ? HOUR_MINUTE : TIME;
            return ticks.map((t) => format.format(new Date(t * 1000)));
          },
        },
        {
          stroke: "#5d6b7e", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dde3ea" }, size: 48,
          incrs: integers ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000] : undefined,
        },
      ],
      series: [{ label: "Time", value: (u, t) => (t == null ? "–" : DATE_TIME.format(new Date(t * 1000))) }]
        .concat(series.map(([label, color, fmt]) => ({
          label, stroke: color, width: 2, fill: `${color}14`, points: { show: false },
          value: (u, v) => (v == null ? "–" : fmt(v)),
        }))),
    };
    return new uPlot(options, [[]].concat(series.map(() => [])), container);
  }

  function ensureCharts() {
    if (typeof uPlot === "undefined") {
      say("error", "The chart library (vendor/uPlot.iife.min.js) did not load: charts are unavailable.");
      return false;
    }
    if (!charts.connections) {
      charts.connections = makeChart($("chart-connections"),
        TRANSPORTS.map(([key, label]) => [label, COLORS[key], String]), true);
      charts.messages = makeChart($("chart-messages"), [
        ["In /s", COLORS.in, rate], ["Out /s", COLORS.out, rate],
      ], false);
      const resize = () => {
        for (const [name, chart] of Object.entries(charts)) {
          const width = $(`chart-${name}`).clientWidth;
          if (width > 0 && width !== chart.width) chart.setSize({ width, height: chart.height });
        }
      };
      new ResizeObserver(resize).observe($("view-overview"));
    }
    return true;
  }

  /** The history as the charts keep it: times and, by key, values (null: no sample). */
  function emptyHistory(range) {
    return { range, step: 1, now: null, nodes: [], t: [], websocket: [], sse: [], longpoll: [], pusher: [], in: [], out: [] };
  }

  const SERIES = { websocket: "websocket", sse: "sse", longpoll: "longpoll", pusher: "pusher", in: "messages_in", out: "messages_out" };

  /** Add the points of an answer of /admin/v1/history to *data*; drop those out of the range. */
  function absorb(data, body) {
    data.step = body.step || data.step;
    data.now = body.now ?? data.now;
    data.nodes = body.nodes || data.nodes;
    const times = body.t || [];
    const last = data.t.length ? data.t[data.t.length - 1] : -Infinity;
    for (let i = 0; i < times.length; i++) {
      if (times[i] <= last) continue;   // had it already
      data.t.push(times[i]);
      for (const [key, name] of Object.entries(SERIES)) {
        const values = (body.series || {})[name] || [];
        data[key].push(values[i] ?? null);
      }
    }
    const from = (data.now ?? last) - RANGES[data.range].seconds;
    const cut = data.t.findIndex((t) => t > from);
    const drop = cut < 0 ? data.t.length : cut;
    if (drop > 0) for (const key of ["t", ...Object.keys(SERIES)]) data[key].splice(0, drop);
  }

  /** The time of the first sample with a value (of *keys*), and of the first with one above 0. */
  function firsts(data, keys) {
    let first = null, active = null;
    for (let i = 0; i < data.t.length; i++) {
      const values = keys.map((key) => data[key][i]);
      if (first === null && values.some((v) => v != null)) first = data.t[i];
      if (values.some((v) => v > 0)) { active = data.t[i]; break; }
    }
    return [first, active];
  }

  /** What the charts show, said in their captions: the range, or less while the history is shorter. */
  function caption(data, first) {
    const range = RANGES[data.range];
    const now = data.now ?? Date.now() / 1000;
    const every = data.step >= 60 ? "per minute" : "per second";
    if (first === null) return `${range.text}, ${every}: no samples yet`;
    if (first > now - range.seconds + 2 * data.step) {   // the history is shorter than the range
      return `since ${TIME.format(new Date(first * 1000))}, ${every}`;
    }
    return `${range.text}, ${every}`;
  }

  function renderCharts(data) {
    if (!ensureCharts()) return;
    const now = data.now ?? Date.now() / 1000;
    const keys = TRANSPORTS.map(([key]) => key);
    const [firstConnections, activeConnections] = firsts(data, keys);
    const [firstMessages, activeMessages] = firsts(data, ["in", "out"]);
    const first = firstConnections ?? firstMessages;
    const from = Math.max(now - RANGES[data.range].seconds, Math.min(first ?? now, now - 10 * data.step) - data.step);
    chartSpan = [from, now];
    charts.connections.setData([data.t, ...keys.map((key) => data[key])]);
    charts.messages.setData([data.t, data.in, data.out]);
    // the legend says the latest figures, unless the pointer is over a chart
    const last = data.t.length - 1;
    for (const chart of Object.values(charts)) {
      if (chart.cursor.left == null || chart.cursor.left < 0) chart.setLegend({ idx: last });
    }
    const text = caption(data, first);
    $("chart-connections-range").textContent = text;
    $("chart-messages-range").textContent = text;
    // what the charts show, for whoever reads the page rather than the picture
    const lastOf = (key) => (last >= 0 ? data[key][last] : null);
    const connections = Object.fromEntries(keys.map((key) => [key, lastOf(key)]));
    const messages = { in: lastOf("in"), out: lastOf("out") };
    const common = { range: data.range, step: String(data.step), points: String(data.t.length), from: String(from),
      lastT: last >= 0 ? String(data.t[last]) : "" };
    Object.assign($("chart-connections").dataset, common, {
      first: String(firstConnections ?? ""), active: String(activeConnections ?? ""), last: JSON.stringify(connections),
    });
    Object.assign($("chart-messages").dataset, common, {
      first: String(firstMessages ?? ""), active: String(activeMessages ?? ""), last: JSON.stringify(messages),
    });
    const said = (pairs) => pairs.map(([label, v]) => `${label} ${v == null ? "none" : v}`).join(", ");
    $("chart-connections").setAttribute("aria-label", `Connections by transport, ${text}. Latest: ${
      said(TRANSPORTS.map(([key, label]) => [label, connections[key]]))}.`);
    $("chart-messages").setAttribute("aria-label", `Messages per second, ${text}. Latest: ${
      said([["in", messages.in == null ? null : rate(messages.in)], ["out", messages.out == null ? null : rate(messages.out)]])}.`);
  }

  function overviewView(params) {
    showView("overview", "Overview");
    const asked = params.get("range");
    const state = { live: true, range: RANGES[asked] ? asked : "5m", data: null, timer: null, asking: 0 };
    for (const input of document.querySelectorAll("input[name=range]")) input.checked = input.value === state.range;

    const schedule = () => {
      clearTimeout(state.timer);
      if (state.live) state.timer = setTimeout(ask, RANGES[state.range].poll);
    };
    const ask = async () => {
      const mine = ++state.asking;
      const data = state.data && state.data.range === state.range ? state.data : emptyHistory(state.range);
      const after = data.t.length ? `&after=${data.t[data.t.length - 1]}` : "";
      try {
        const body = await api("GET", `/admin/v1/history?range=${enc(state.range)}${after}`);
        if (!state.live || mine !== state.asking) return;
        absorb(data, body);
        state.data = data;
        hush("history");
        nodeLine(latest?.stats, data.nodes);
        renderCharts(data);
      } catch (error) {
        if (!state.live || mine !== state.asking) return;
        report(error, "Reading the history of the charts", "history");
      }
      schedule();
    };
    const pick = (range) => {
      if (!RANGES[range] || range === state.range) return;
      clearTimeout(state.timer);
      state.range = range;
      state.data = null;
      remember("#/overview", new URLSearchParams(range === "5m" ? {} : { range }));
      ask();
    };
    overview = {
      tiles() {
        renderTiles();
        nodeLine(latest?.stats, state.data?.nodes);
      },
      pick,
    };
    overview.tiles();
    // the charts are sized once the view is laid out
    requestAnimationFrame(() => { if (state.live) ask(); });
    return {
      stop() {
        state.live = false;
        clearTimeout(state.timer);
        overview = null;
      },
    };
  }

  $("range-picker").addEventListener("change", (event) => {
    if (overview && event.target.name === "range") overview.pick(event.target.value);
  });

  // publishers

  function showSecret(name, secret, rotated) {
    $("secret-title").firstChild.textContent = rotated ? "New secret of " : "Secret of the new publisher ";
    $("secret-publisher").textContent = name;
    $("secret-value").textContent = secret;
    $("secret-copied").textContent = "";
    $("secret-box").hidden = false;
    $("secret-box").dataset.publisher = name;
    $("secret-copy").focus();
  }

  function hideSecret() {
    $("secret-box").hidden = true;
    $("secret-value").textContent = "";
    $("secret-publisher").textContent = "";
    delete $("secret-box").dataset.publisher;
  }

  $("secret-done").addEventListener("click", hideSecret);
  $("secret-copy").addEventListener("click", async () => {
    const box = $("secret-copied");
    try {
      await navigator.clipboard.writeText($("secret-value").textContent);
      box.textContent = "Copied to the clipboard.";
    } catch (error) {
      box.textContent = `Copying was refused (${error.message}): select the secret and copy it by hand.`;
    }
  });

  let publishersNow = null;   // the publishers view on screen: {load(), filter()}

  function publishersView() {
    showView("publishers", "Publishers");
    clearFormErrors($("add-publisher"));
    clearNote("publishers-note");
    let live = true;
    let all = [];
    const filter = () => renderPublishers(all, $("publishers-filter").value.trim().toLowerCase());
    const load = async () => {
      try {
        const body = await api("GET", "/admin/v1/publishers");
        if (!live) return;
        all = body.publishers || [];
        filter();
      } catch (error) {
        if (live) report(error, "Listing publishers");
      }
    };
    publishersNow = { load, filter };
    load();
    return { stop() { live = false; publishersNow = null; hideSecret(); } };
  }

  function renderPublishers(publishers, filter) {
    const body = $("publishers-body");
    body.textContent = "";
    const shown = publishers.filter((p) => p.name.includes(filter)).sort((a, b) => a.name.localeCompare(b.name));
    for (const publisher of shown) {
      const link = el("a", { text: publisher.name, attrs: { href: `#/publishers/${enc(publisher.name)}` } });
      const rotate = el("button", {
        className: "btn btn-small", text: "Rotate secret",
        attrs: { type: "button", "aria-label": `Rotate secret of ${publisher.name}` },
      });
      rotate.addEventListener("click", () => rotatePublisher(publisher.name));
      const remove = el("button", {
        className: "btn btn-small btn-ghost btn-link-danger", text: "Remove",
        attrs: { type: "button", "aria-label": `Remove ${publisher.name}` },
      });
      remove.addEventListener("click", () => removePublisher(publisher));
      const centers = el("a", {
        className: "btn btn-small", text: "Centers",
        attrs: { href: `#/publishers/${enc(publisher.name)}`, "aria-label": `Centers of ${publisher.name}` },
      });
      body.append(el("tr", { attrs: { "data-publisher": publisher.name } },
        el("th", { className: "name", attrs: { scope: "row", "data-label": "Name" } }, link),
        el("td", { className: "num", text: number(publisher.centers), attrs: { "data-label": "Centers" } }),
        el("td", { attrs: { "data-label": "Created" } }, when(publisher.created)),
        // What a Pusher library is configured with: public, so shown every time.
        el("td", { className: "mono app-id", text: publisher.pusher?.app_id ?? "", attrs: { "data-label": "App id" } }),
        el("td", { className: "mono app-key", text: publisher.pusher?.key ?? "", attrs: { "data-label": "Key" } }),
        el("td", { className: "actions-cell" }, el("div", { className: "actions" }, centers, rotate, remove)),
      ));
    }
    const count = $("publishers-count");
    count.textContent = filter
      ? `${number(shown.length)} of ${plural(publishers.length, "publisher", "publishers")}`
      : plural(publishers.length, "publisher", "publishers");
    const empty = $("publishers-empty");
    empty.textContent = publishers.length ? `No publisher's name has “${filter}” in it.` : "No publishers yet: add one above.";
    empty.hidden = shown.length > 0;
    $("publishers-table").hidden = shown.length === 0;
  }

  $("publishers-filter").addEventListener("input", () => { if (publishersNow) publishersNow.filter(); });

  $("add-publisher").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("add-publisher-name");
    const name = input.value.trim();
    if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) {
      fieldError(input, name
        ? "A publisher's name is 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit."
        : "Give the publisher a name.");
      return;
    }
    try {
      const body = await api("POST", "/admin/v1/publishers", { json: { name } });
      input.value = "";
      showSecret(body.name, body.secret, false);
      if (publishersNow) publishersNow.load();
    } catch (error) {
      if (refusal(error)) fieldError(input, error.code === "publisher_exists"
        ? `There is a publisher named ${name} already.` : error.message);
      else report(error, `Adding publisher ${name}`);
    }
  });

  async function rotatePublisher(name) {
    if (!await ask($("rotate-dialog"), name)) return;
    try {
      const body = await api("POST", `${publisherPath(name)}/rotate`);
      showSecret(body.name, body.secret, true);
    } catch (error) {
      report(error, `Rotating the secret of ${name}`);
    }
  }

  async function removePublisher(publisher) {
    const typed = $("remove-typed");
    const confirm = $("remove-confirm");
    const matches = () => typed.value === publisher.name;
    const sync = () => { confirm.disabled = !matches(); };
    typed.addEventListener("input", sync);
    const ok = await ask($("remove-dialog"), publisher.name, {
      check: matches,
      prepare: () => {
        typed.value = "";
        sync();
        $("remove-centers").textContent = plural(publisher.centers, "center", "centers");
      },
    });
    typed.removeEventListener("input", sync);
    if (!ok) return;
    try {
      await api("DELETE", publisherPath(publisher.name));
      if ($("secret-box").dataset.publisher === publisher.name) hideSecret();
      note("publishers-note", `Publisher ${publisher.name} removed.`);
      if (publishersNow) publishersNow.load();
    } catch (error) {
      report(error, `Removing publisher ${publisher.name}`);
    }
  }

  // centers of a publisher: searched by prefix, sorted and paged by the server

  const SORTS = ["name", "subscribers", "activity"];
  let centersNow = null;   // the centers view on screen

  function centersView(publisher, params) {
    showView("centers", `Centers of ${publisher}`);
    $("centers-publisher").textContent = publisher;
    $("centers-body").textContent = "";
    $("centers-empty").hidden = true;
    $("centers-count").textContent = "";
    clearFormErrors($("add-center"));
    clearNote("centers-note");
    const asked = params.get("sort");
    const state = {
      publisher, live: true, timer: null, typing: null, asking: 0,
      prefix: params.get("prefix") || "", sort: SORTS.includes(asked) ? asked : "name",
      cursors: [], cursor: null, next: null, total: null, shown: 0,
    };
    $("centers-prefix").value = state.prefix;
    $("centers-sort").value = state.sort;

    const load = async () => {
      clearTimeout(state.timer);
      const mine = ++state.asking;
      const query = new URLSearchParams({ sort: state.sort, limit: String(PAGE) });
      if (state.prefix) query.set("prefix", state.prefix);
      if (state.cursor) query.set("cursor", state.cursor);
      try {
        const body = await api("GET", `${publisherPath(publisher)}/centers?${query}`);
        if (!state.live || mine !== state.asking) return;
        state.next = body.next ?? null;
        state.total = body.total ?? null;
        renderCenters(state, body.centers || []);
        hush("centers");
      } catch (error) {
        if (!state.live || mine !== state.asking) return;
        if (refusal(error) && error.code === "invalid_query" && state.cursor) {
          firstPage();   // a cursor of a listing that changed: from the start
          return;
        }
        report(error, `Listing the centers of ${publisher}`, "centers");
        if (error instanceof ApiError && error.status === 404) return;   // nothing to refresh
      }
      if (state.live) state.timer = setTimeout(load, CENTERS_MS);
    };
    const firstPage = () => {
      state.cursors = [];
      state.cursor = null;
      load();
    };
    const search = () => {
      const query = new URLSearchParams();
      if (state.prefix) query.set("prefix", state.prefix);
      if (state.sort !== "name") query.set("sort", state.sort);
      remember(`#/publishers/${enc(publisher)}`, query);
      firstPage();
    };
    centersNow = {
      publisher,
      load,
      typed(prefix) {
        clearTimeout(state.typing);
        state.typing = setTimeout(() => {
          if (prefix === state.prefix) return;
          state.prefix = prefix;
          search();
        }, TYPING_MS);
      },
      sorted(sort) {
        if (!SORTS.includes(sort) || sort === state.sort) return;
        state.sort = sort;
        search();
      },
      forward() {
        if (!state.next) return;
        state.cursors.push(state.cursor);
        state.cursor = state.next;
        load();
      },
      back() {
        if (!state.cursors.length) return;
        state.cursor = state.cursors.pop();
        load();
      },
    };
    load();
    return {
      stop() {
        state.live = false;
        clearTimeout(state.timer);
        clearTimeout(state.typing);
        centersNow = null;
      },
    };
  }

  function renderCenters(state, centers) {
    const { publisher } = state;
    const body = $("centers-body");
    // the table is made again: the focus stays on what it was on
    const focused = body.contains(document.activeElement)
      ? [document.activeElement.closest("tr")?.dataset.center, document.activeElement.dataset.role] : null;
    const paging = document.activeElement?.id;
    body.textContent = "";
    for (const center of centers) {
      const flags = el("td", { attrs: { "data-label": "Flags" } },
        el("span", { className: center.private ? "badge badge-private" : "badge badge-public", text: center.private ? "private" : "public" }),
        center.presence ? el("span", { className: "badge badge-presence", text: "presence" }) : null);
      const open = el("a", {
        text: center.name, attrs: { href: centerRoute(publisher, center.name), "data-role": "open" },
      });
      const remove = el("button", {
        className: "btn btn-small btn-ghost btn-link-danger", text: "Delete",
        attrs: { type: "button", "aria-label": `Delete ${center.name}`, "data-role": "delete" },
      });
      remove.addEventListener("click", () => deleteCenter(publisher, center.name));
      body.append(el("tr", { attrs: { "data-center": center.name } },
        el("th", { className: "name", attrs: { scope: "row", "data-label": "Name" } }, open),
        flags,
        el("td", { className: "num subscribers", text: number(center.subscribers ?? 0), attrs: { "data-label": "Subscribers" } }),
        el("td", {
          className: "num", text: center.presence ? number(center.members ?? 0) : "—",
          attrs: center.presence ? { "data-label": "Members" } : { "data-label": "Members", "data-empty": "" },
        }),
        el("td", { className: "num history", text: center.history ?? "—", attrs: { "data-label": "History" } }),
        el("td", { className: "last", attrs: { "data-label": "Last message" } }, when(center.last_ts)),
        el("td", { className: "actions-cell" }, el("div", { className: "actions" }, remove)),
      ));
    }
    if (focused) {
      const row = [...body.rows].find((tr) => tr.dataset.center === focused[0]);
      const again = row?.querySelector(`[data-role="${focused[1]}"]`);
      if (again) again.focus({ preventScroll: true });
    }
    const first = state.cursors.length * PAGE + 1;
    const count = $("centers-count");
    Object.assign(count.dataset, {
      from: String(centers.length ? first : 0), to: String(centers.length ? first + centers.length - 1 : 0),
      total: String(state.total ?? ""),
    });
    const total = state.total ?? centers.length;
    count.textContent = centers.length
      ? `${number(first)}–${number(first + centers.length - 1)} of ${number(total)}`
      : (state.cursors.length ? `none past ${number(first - 1)} of ${number(total)}` : "");
    $("centers-prev").disabled = state.cursors.length === 0;
    $("centers-next").disabled = !state.next;
    // the first or the last page: the focus goes to the button that still leads somewhere
    if (paging === "centers-next" && !state.next && state.cursors.length) $("centers-prev").focus();
    if (paging === "centers-prev" && !state.cursors.length && state.next) $("centers-next").focus();
    const empty = $("centers-empty");
    empty.textContent = state.prefix
      ? `No center's name starts with “${state.prefix}”.`
      : "No centers yet: create one above, or let the site do it.";
    empty.hidden = centers.length > 0;
    $("centers-table").hidden = centers.length === 0;
  }

  $("centers-tools").addEventListener("submit", (event) => event.preventDefault());
  $("centers-prefix").addEventListener("input", (event) => {
    if (centersNow) centersNow.typed(event.target.value.trim());
  });
  $("centers-sort").addEventListener("change", (event) => { if (centersNow) centersNow.sorted(event.target.value); });
  $("centers-next").addEventListener("click", () => { if (centersNow) centersNow.forward(); });
  $("centers-prev").addEventListener("click", () => { if (centersNow) centersNow.back(); });

  $("add-center-presence").addEventListener("change", (event) => {
    if (event.target.checked) $("add-center-private").checked = true;
  });
  $("add-center-private").addEventListener("change", (event) => {
    if (!event.target.checked) $("add-center-presence").checked = false;
  });

  const CENTER_NAME = /^(?!\.\.?$)[A-Za-z0-9._:@~=,;-]{1,200}$/;

  $("add-center").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!centersNow) return;
    const { publisher } = centersNow;
    const input = $("add-center-name");
    const name = input.value.trim();
    if (!CENTER_NAME.test(name)) {
      fieldError(input, name
        ? "A center's name is 1 to 200 of A-Z, a-z, 0-9 and . _ : @ ~ = , ; -, other than . and .."
        : "Give the center a name.");
      return;
    }
    const options = { private: $("add-center-private").checked, presence: $("add-center-presence").checked };
    for (const key of ["history", "ttl"]) {
      const field = $(`add-center-${key}`);
      const value = field.value.trim();
      if (field.validity.badInput || (value !== "" && !/^\d+$/.test(value))) {
        fieldError(field, `${key === "ttl" ? "TTL" : "History"} is a whole number, or empty for the server's default.`);
        return;
      }
      if (value !== "") options[key] = Number(value);
    }
    try {
      const response = await api("PUT", centerPath(publisher, name), { json: options, raw: true });
      if (response.status === 201) {
        note("centers-note", `Center ${name} created.`);
        $("add-center").reset();
      } else {
        fieldError(input, `There is a center named ${name} already: nothing was changed.`);
      }
      if (centersNow) centersNow.load();
    } catch (error) {
      if (refusal(error) && error.code !== "no_such_publisher") {
        const field = /history/.test(error.message) ? $("add-center-history")
          : /ttl/i.test(error.message) ? $("add-center-ttl") : input;
        fieldError(field, error.message);
      } else {
        report(error, `Creating center ${name}`);
      }
    }
  });

  async function deleteCenter(publisher, name) {
    if (!await ask($("delete-center-dialog"), name)) return;
    try {
      await api("DELETE", centerPath(publisher, name));
      note("centers-note", `Center ${name} deleted.`);
      if (centersNow) centersNow.load();
    } catch (error) {
      report(error, `Deleting center ${name}`);
    }
  }

  // a center: its settings, subscribers, members, retained history, and the live tail

  let tail = null;   // the center on screen

  function centerView(publisher, center) {
    showView("center", center);
    $("center-name").textContent = center;
    const link = $("center-publisher-link");
    link.textContent = publisher;
    link.href = `#/publishers/${enc(publisher)}`;
    for (const id of ["center-settings", "center-transports", "center-members-body", "center-members-count"]) {
      $(id).textContent = "";
    }
    $("center-members-card").hidden = true;
    $("tail-publish").reset();
    clearFormErrors($("tail-publish"));
    clearNote("tail-publish-result");
    const state = {
      publisher, center, live: true, ended: false, controller: null, retry: null, detailTimer: null,
      paused: false, held: [], ids: new Set(), messages: 0, presence: 0, since: Date.now() / 1000,
      kind: null, connected: false, position: null, last: null, retained: null, older: null, fromTop: false,
      loadingOlder: false,
    };
    tail = state;
    clearList(state);
    setPaused(false);
    loadCenter(state);
    openHistory(state);
    return {
      stop() {
        state.live = false;
        clearTimeout(state.retry);
        clearTimeout(state.detailTimer);
        if (state.controller) state.controller.abort();
        tail = null;
      },
    };
  }

  /** A term and its description, in a <dl>. */
  function fact(list, term, ...description) {
    list.append(el("div", { className: "fact" }, el("dt", { text: term }), el("dd", {}, ...description)));
  }

  async function loadCenter(state) {
    clearTimeout(state.detailTimer);
    try {
      const body = await api("GET", centerPath(state.publisher, state.center));
      if (!state.live) return;
      renderCenter(state, body);
      hush("center");
    } catch (error) {
      if (!state.live) return;
      if (error instanceof ApiError && error.status === 404) {
        gone(state, error);
        return;
      }
      report(error, `Reading center ${state.center}`, "center");
    }
    if (state.live && !state.ended) state.detailTimer = setTimeout(() => loadCenter(state), CENTER_MS);
  }

  function renderCenter(state, center) {
    const settings = $("center-settings");
    settings.textContent = "";
    fact(settings, "Access", center.private ? "Private (subscriber token needed)" : "Public");
    fact(settings, "Presence", center.presence ? "On (members tracked)" : "Off");
    fact(settings, "History", center.history === 0 ? "None kept" : `Last ${plural(center.history, "message", "messages")}`);
    fact(settings, "Expires", center.ttl ? `After ${duration(center.ttl)} idle` : "Never");
    fact(settings, "Created", when(center.created));
    fact(settings, "Last message", when(center.last_ts));

    const transports = $("center-transports");
    transports.textContent = "";
    const counts = center.transports || {};
    let total = 0;
    for (const [key, label] of TRANSPORTS) {
      const n = counts[key] ?? 0;
      total += n;
      const value = el("dd", { text: number(n), attrs: { "data-transport": key } });
      transports.append(el("div", { className: "fact" }, el("dt", { text: label }), value));
    }
    transports.append(el("div", { className: "fact fact-total" }, el("dt", { text: "Total" }),
      el("dd", { text: number(center.subscribers ?? total), attrs: { "data-transport": "total" } })));

    const card = $("center-members-card");
    card.hidden = !center.presence;
    if (center.presence) {
      const members = center.member_list || [];
      const all = center.members ?? members.length;
      $("center-members-count").textContent = all > members.length
        ? `(${number(all)}, the first ${number(members.length)} shown)` : `(${number(all)})`;
      const body = $("center-members-body");
      body.textContent = "";
      for (const member of members) {
        body.append(el("tr", { attrs: { "data-uid": member.uid } },
          el("th", { className: "mono", text: member.uid, attrs: { scope: "row" } }),
          el("td", {}, el("code", { className: "member-info", text: member.info == null ? "—" : JSON.stringify(member.info) }))));
      }
      $("center-members-empty").hidden = members.length > 0;
      $("center-members-table").hidden = members.length === 0;
    }
  }

  /** The center is not there (any more): say so and stop. */
  function gone(state, error) {
    if (state.ended) return;
    state.ended = true;
    clearTimeout(state.retry);
    clearTimeout(state.detailTimer);
    if (state.controller) state.controller.abort();
    tailState(state, "ended", `Not watching: ${error.message}.`);
  }

  /** The retained history, newest first, then the tail from where it stands. */
  async function openHistory(state) {
    tailState(state, "connecting", "Connecting…");
    try {
      const body = await api("GET", `${centerPath(state.publisher, state.center)}/messages?limit=${HISTORY_PAGE}`);
      if (!state.live) return;
      state.position = body.position ?? null;
      older(state, body, true);
      if (state.messages === 0 && state.ids.size) mark(state);
    } catch (error) {
      if (!state.live) return;
      if (error instanceof ApiError && error.status === 404) {
        gone(state, error);
        return;
      }
      report(error, `Reading the history of ${state.center}`, "tail");
      if (refusal(error)) {
        tailState(state, "error", `Not watching: ${error.message}`);
        return;
      }
      state.retry = setTimeout(() => { if (state.live) openHistory(state); }, TAIL_RETRY_MS);
      return;
    }
    connectTail(state);
  }

  /** Show a page of retained messages under those shown. */
  function older(state, body, first = false) {
    const list = $("tail-list");
    for (const message of body.messages || []) {
      if (state.ids.has(message.id)) continue;
      state.ids.add(message.id);
      list.append(entry({ kind: "message", source: "history", ...message }));
    }
    if (typeof body.retained === "number") state.retained = body.retained;
    state.older = body.next ?? null;
    state.fromTop = false;
    olderControls(state, first);
    emptyNote();
  }

  function olderControls(state, first = false) {
    const button = $("center-older");
    button.hidden = !(state.older || state.fromTop);
    button.textContent = state.fromTop ? "Show retained messages" : "Older messages";
    const retained = state.retained == null ? "" : `${plural(state.retained, "message", "messages")} retained in all`;
    $("center-history-note").textContent = state.older || state.fromTop || first ? retained
      : `No older message retained${retained ? ` (${retained})` : ""}.`;
  }

  $("center-older").addEventListener("click", async () => {
    const state = tail;
    if (!state || state.loadingOlder) return;
    const button = $("center-older");
    state.loadingOlder = true;
    button.disabled = true;
    const before = state.fromTop ? "" : `&before=${enc(state.older)}`;
    try {
      const body = await api("GET", `${centerPath(state.publisher, state.center)}/messages?limit=${HISTORY_PAGE}${before}`);
      if (state !== tail) return;
      older(state, body);
    } catch (error) {
      if (state === tail) report(error, `Reading older messages of ${state.center}`, "tail");
    } finally {
      state.loadingOlder = false;
      button.disabled = false;
      // the button went with the last page: the focus goes to what says so
      if (button.hidden && (document.activeElement === button || document.activeElement === document.body)) {
        $("center-history-note").focus();
      }
    }
  });

  // the live tail: the SSE stream of /tail, read with fetch() (EventSource sends no Authorization)

  /** A parser of the text/event-stream format: feed it text, it calls dispatch(type, data, id). */
  function eventStream(dispatch, comment) {
    let buffer = "";
    let type = "", data = [], id = null;
    const line = (text) => {
      if (text === "") {
        if (data.length) dispatch(type || "message", data.join("\n"), id);
        type = "";
        data = [];
        return;
      }
      if (text[0] === ":") { comment(text.slice(1).trim()); return; }
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    };
    return (chunk) => {
      buffer += chunk;
      // a "\r" at the very end may be the first half of "\r\n": wait for the next chunk
      const end = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, end).split(/\r\n|\r|\n/);
      const rest = lines.pop();
      buffer = rest + buffer.slice(end);
      for (const text of lines) line(text);
    };
  }

  /** The state of the tail, in words: "Live · 12 messages since 10:51:02", "Reconnecting…". */
  function tailState(state, kind, text) {
    if (state !== tail) return;
    $("tail-dot").dataset.state = kind;
    $("tail-state").textContent = text;
    if (kind !== state.kind) {
      state.kind = kind;
      $("tail-announce").textContent = text;   // said once per change, not per message
    }
  }

  function tallies(state) {
    const parts = [plural(state.messages, "message", "messages")];
    if (state.presence) parts.push(plural(state.presence, "presence event", "presence events"));
    return `${parts.join(" and ")} since ${TIME.format(new Date(state.since * 1000))}`;
  }

  function describe(state) {
    if (state.ended || !state.connected) return;
    if (state.paused) {
      tailState(state, "paused", `Paused · ${plural(state.held.length, "item", "items")} held · ${tallies(state)}`);
    } else {
      tailState(state, "live", `Live · ${tallies(state)}`);
    }
  }

  async function connectTail(state) {
    const controller = new AbortController();
    state.controller = controller;
    state.connected = false;
    const since = state.last ?? state.position;
    let response;
    try {
      response = await api("GET", `${centerPath(state.publisher, state.center)}/tail${since ? `?since=${enc(since)}` : ""}`, {
        signal: controller.signal, raw: true,
      });
    } catch (error) {
      if (!state.live || error.name === "AbortError" || error instanceof SignedOut) return;
      if (error instanceof ApiError && error.status === 404) {
        gone(state, error);
        return;
      }
      report(error, `Watching ${state.center}`, "tail");
      if (refusal(error)) {
        tailState(state, "error", `Not watching: ${error.message}`);
        return;
      }
      retryTail(state);
      return;
    }
    hush("tail");
    const parse = eventStream((type, data, id) => tailEvent(state, type, data, id), () => {});
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parse(decoder.decode(value, { stream: true }));
      }
    } catch (error) {
      if (!state.live || error.name === "AbortError") return;
    }
    if (!state.live || state.ended) return;
    retryTail(state);
  }

  function retryTail(state) {
    state.connected = false;
    tailState(state, "connecting", "Reconnecting…");
    state.retry = setTimeout(() => { if (state.live && !state.ended) connectTail(state); }, TAIL_RETRY_MS);
  }

  function tailEvent(state, type, data, id) {
    if (!state.live) return;
    let item;
    try {
      item = JSON.parse(data);
    } catch (error) {
      say("error", `The server sent an event that is not JSON (${type}): ${data.slice(0, 200)}`, { source: "tail" });
      return;
    }
    if (type === "hello") {
      if (item.recovered === false) {
        arrive(state, { kind: "note", ts: Date.now() / 1000,
          text: "Some messages published meanwhile are no longer retained: there is a gap here." });
      }
      if (!state.last && item.position) state.position = item.position;
      state.connected = true;
      describe(state);
      return;
    }
    if (type === "end") {
      if (item.reason !== "deleted") return;   // the daemon stopping, or this page too slow: reconnected
      state.ended = true;
      clearTimeout(state.detailTimer);
      tailState(state, "ended", "Ended: the center was deleted.");
      arrive(state, { kind: "note", ts: Date.now() / 1000, text: "The center was deleted." });
      return;
    }
    // item.event: the message's event, when it is not "message"
    if (type === "message") {
      const messageId = item.id ?? id;
      state.last = messageId;
      if (state.ids.has(messageId)) return;   // shown already
      state.ids.add(messageId);
      arrive(state, { kind: "message", source: "live", id: messageId, ts: item.ts, data: item.data, event: item.event });
    } else if (type === "members" || type === "join" || type === "leave") {
      arrive(state, { kind: type, ts: Date.now() / 1000, item });
      if (type !== "members") loadCenter(state);
    }
  }

  function arrive(state, item) {
    if (item.kind === "message") state.messages += 1;
    else if (item.kind === "join" || item.kind === "leave") state.presence += 1;
    if (state.paused) {
      state.held.push(item);
      const pill = $("tail-pending");
      pill.dataset.count = String(state.held.length);
      pill.textContent = `${number(state.held.length)} new while paused`;
      pill.hidden = false;
    } else {
      show(state, item);
    }
    describe(state);
  }

  function presenceText(item) {
    const presence = item.item;
    const who = (member) => (member.info != null ? `${member.uid} ${JSON.stringify(member.info)}` : String(member.uid));
    if (item.kind === "members") {
      const members = presence.members || [];
      return members.length ? `${plural(members.length, "member", "members")}: ${members.map(who).join(", ")}` : "no members";
    }
    if (item.kind === "join") return `${who(presence)} joined`;
    return `${presence.uid} left`;
  }

  /** The <li> of an item: a message, a presence item or a note. */
  function entry(item) {
    const kind = item.kind === "message" ? "message" : item.kind === "note" ? "note" : "presence";
    const node = el("li", { className: `entry entry-${kind}` });
    node.dataset.kind = item.kind;
    let label, body;
    if (item.kind === "message") {
      node.dataset.id = item.id;
      node.dataset.source = item.source;
      if (item.event) node.dataset.event = item.event;
      label = item.event ? `${item.id} ${item.event}` : item.id;
      const shown = shownData(item.data);
      body = el("pre", { className: "entry-data", text: shown.text });
      if (shown.json) node.dataset.json = "true";
    } else if (item.kind === "note") {
      label = "note";
      body = el("p", { className: "entry-data", text: item.text });
    } else {
      if (item.item.uid != null) node.dataset.uid = item.item.uid;
      label = item.kind;
      body = el("p", { className: "entry-data", text: presenceText(item) });
    }
    const time = when(item.ts);
    time.classList.add("entry-time");
    node.append(el("span", { className: "entry-id", text: label }), time, body);
    return node;
  }

  /** Where what arrives live begins: above it, the newer; below, what was retained. */
  function mark(state) {
    const list = $("tail-list");
    if (list.querySelector(".entry-mark")) return;
    const node = el("li", { className: "entry-mark", attrs: { "data-kind": "mark" } },
      "Opened at ", when(state.since, TIME), ": what arrives shows above, what was retained below");
    list.prepend(node);
  }

  function show(state, item) {
    const list = $("tail-list");
    const node = entry(item);
    node.classList.add("entry-new");
    list.prepend(node);
    // the oldest go past TAIL_KEEP: "Older messages" brings them back
    while (list.children.length > TAIL_KEEP) {
      const gone = list.lastElementChild;
      if (gone.dataset.kind === "message") state.ids.delete(gone.dataset.id);
      gone.remove();
      const oldest = [...list.querySelectorAll("li[data-kind=message]")].pop();
      if (oldest) {
        state.older = oldest.dataset.id;
        olderControls(state);
      }
    }
    emptyNote();
  }

  function emptyNote() {
    $("tail-empty").hidden = $("tail-list").children.length > 0;
  }

  function clearList(state) {
    $("tail-list").textContent = "";
    $("center-history-note").textContent = "";
    $("center-older").hidden = true;
    const pill = $("tail-pending");
    pill.hidden = true;
    pill.dataset.count = "0";
    if (state) {
      state.held = [];
      state.ids = new Set();
      state.messages = 0;
      state.presence = 0;
      state.since = Date.now() / 1000;
    }
    emptyNote();
  }

  function setPaused(paused) {
    const button = $("tail-pause");
    button.textContent = paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", String(paused));
    if (!tail) return;
    tail.paused = paused;
    if (!paused) {
      const held = tail.held;
      tail.held = [];
      for (const item of held) show(tail, item);
      $("tail-pending").hidden = true;
      $("tail-pending").dataset.count = "0";
    }
    describe(tail);
  }

  $("tail-pause").addEventListener("click", () => setPaused(!(tail && tail.paused)));
  $("tail-clear").addEventListener("click", () => {
    if (!tail) return;
    clearList(tail);
    // what was retained can be shown again
    tail.older = null;
    tail.fromTop = true;
    olderControls(tail);
    describe(tail);
  });

  $("tail-publish").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!tail) return;
    const { publisher, center } = tail;
    const box = $("tail-publish-text");
    const text = box.value;
    if (text === "") {
      fieldError(box, "Write the text to publish first.");
      return;
    }
    try {
      const body = await api("POST", `${centerPath(publisher, center)}/messages`, { text });
      box.value = "";
      const reached = plural(body.subscribers, "subscriber", "subscribers");
      note("tail-publish-result", body.subscribers === 0
        ? `Sent to ${reached} (this page watches without subscribing).` : `Sent to ${reached}.`);
      $("tail-publish-result").dataset.id = body.id;
    } catch (error) {
      if (refusal(error) && error.status !== 404) fieldError(box, error.message);
      else report(error, `Publishing to ${center}`);
    }
  });

  $("tail-publish-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("tail-publish").requestSubmit();
    }
  });

  // start: signed in already when this tab was reloaded

  if (signedIn()) start(null);
  else signOut();
})();
