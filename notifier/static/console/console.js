/* The operator console of notifier, over the admin API (docs/console.rst).
 *
 * Plain ES2020, no framework and no build. The admin token lives in this
 * tab's sessionStorage only and goes out in the Authorization header of
 * fetch(); it is never put in a URL, a cookie or localStorage. Text that
 * comes from the server is always set with textContent, never as HTML.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "notifier.console.token";
  const CHART_SECONDS = 300;      // the charts show the last 5 minutes
  const CHART_MIN_SECONDS = 30;   // and never less than this, while the history is short
  const POLL_MS = 1000;           // /admin/v1/stats, every second
  const CENTERS_MS = 3000;        // the centers table, every few seconds
  const TAIL_KEEP = 500;          // entries kept in the tail list
  const TAIL_RETRY_MS = 2000;     // before reconnecting a tail that was cut
  const COLORS = {websocket: "#1f6feb", sse: "#e8710a", longpoll: "#8957e5", in: "#1a7f37", out: "#1f6feb"};

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

  function formatDate(seconds) {
    if (typeof seconds !== "number") return "—";
    const d = new Date(seconds * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function formatClock(seconds) {
    const d = new Date(seconds * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function ago(seconds) {
    if (typeof seconds !== "number") return "—";
    const delta = Math.max(0, Date.now() / 1000 - seconds);
    if (delta < 5) return "just now";
    if (delta < 60) return `${Math.floor(delta)} s ago`;
    if (delta < 3600) return `${Math.floor(delta / 60)} min ago`;
    if (delta < 86400) return `${Math.floor(delta / 3600)} h ago`;
    return `${Math.floor(delta / 86400)} d ago`;
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

  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  function fromHash(part) {
    try { return decodeURIComponent(part); } catch (e) { return part; }
  }

  const enc = encodeURIComponent;
  const centerPath = (publisher, center) => `/admin/v1/publishers/${enc(publisher)}/centers/${enc(center)}`;

  // the status area: every API error is shown there

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
    statusSource = null;
  }

  $("status-close").addEventListener("click", () => hush());

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

  /** Show *error* in the status area, saying what was being done. */
  function report(error, doing, source) {
    if (error instanceof SignedOut || error.name === "AbortError") return;
    const code = error instanceof ApiError ? ` (${error.code})` : "";
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
    const problem = $("signin-error");
    problem.hidden = true;
    if (!candidate) {
      problem.textContent = "Give the admin token.";
      problem.hidden = false;
      input.focus();
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
        problem.textContent = refused.code === "admin_disabled"
          ? "This server has no admin token configured ([api] admin_token): the console cannot be used."
          : "That token is not this server's admin token.";
        problem.hidden = false;
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
      problem.textContent = `Could not check the token: ${error.message}`;
      problem.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  function start(stats) {
    session += 1;
    resetSamples();
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

  // views and routes: #/overview, #/publishers, #/publishers/{name}, #/tail/{publisher}/{center}

  const VIEWS = ["signin", "overview", "publishers", "centers", "tail"];

  function showView(name, title) {
    for (const other of VIEWS) $(`view-${other}`).hidden = other !== name;
    document.title = `${title} · notifier console`;
    const section = name === "centers" || name === "tail" ? "publishers" : name;
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

  function route() {
    if (!signedIn()) {
      showView("signin", "Sign in");
      return;
    }
    leaveView();
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(fromHash);
    if (parts[0] === "publishers" && parts[1]) view = centersView(parts[1]);
    else if (parts[0] === "publishers") view = publishersView();
    else if (parts[0] === "tail" && parts[1] && parts[2]) view = tailView(parts[1], parts.slice(2).join("/"));
    else view = overviewView();
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

  // statistics: sampled every second while signed in, so the charts have a history

  const samples = { t: [], websocket: [], sse: [], longpoll: [], in: [], out: [] };
  let previous = null;
  let latest = null;
  let pollTimer = null;

  function resetSamples() {
    for (const key of Object.keys(samples)) samples[key].length = 0;
    previous = null;
    latest = null;
  }

  function record(stats) {
    const now = Date.now() / 1000;
    const connections = stats.connections || {};
    let inRate = null, outRate = null;
    if (previous && now > previous.t) {
      const dt = now - previous.t;
      if (stats.messages_in >= previous.in) inRate = (stats.messages_in - previous.in) / dt;
      if (stats.messages_out >= previous.out) outRate = (stats.messages_out - previous.out) / dt;
    }
    previous = { t: now, in: stats.messages_in, out: stats.messages_out };
    latest = { stats, inRate, outRate };
    samples.t.push(now);
    samples.websocket.push(connections.websocket ?? null);
    samples.sse.push(connections.sse ?? null);
    samples.longpoll.push(connections.longpoll ?? null);
    samples.in.push(inRate);
    samples.out.push(outRate);
    const cut = samples.t.findIndex((t) => t >= now - CHART_SECONDS);
    if (cut > 0) for (const key of Object.keys(samples)) samples[key].splice(0, cut);
    $("node-badge").textContent = stats.node ? `node ${stats.node}` : "";
  }

  async function pollStats(mine) {
    try {
      const stats = await api("GET", "/admin/v1/stats");
      if (mine !== session) return;
      record(stats);
      hush("stats");
      if (overview) overview.render();
    } catch (error) {
      if (mine !== session) return;
      report(error, "Reading /admin/v1/stats", "stats");
    } finally {
      if (mine === session && signedIn()) pollTimer = setTimeout(() => pollStats(mine), POLL_MS);
    }
  }

  // overview

  let overview = null;   // the overview on screen: {render()}
  const charts = {};

  function tile(id, value, shown) {
    const node = $(id);
    node.dataset.value = value == null ? "" : String(value);
    node.querySelector(".tile-value").textContent = shown;
  }

  /** The time axis: up to the last 5 minutes, at least CHART_MIN_SECONDS while the history is short. */
  function span() {
    const now = Date.now() / 1000;
    const kept = samples.t.length ? now - samples.t[0] : 0;
    return [now - Math.min(CHART_SECONDS, Math.max(CHART_MIN_SECONDS, kept)), now];
  }

  function makeChart(container, series, integers) {
    const width = Math.max(200, container.clientWidth);
    const options = {
      width,
      height: window.innerWidth < 640 ? 190 : 230,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: span },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.2 : (integers ? 5 : 1)] },
      },
      axes: [
        { stroke: "#5d6b7e", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dde3ea" } },
        {
          stroke: "#5d6b7e", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dde3ea" }, size: 48,
          incrs: integers ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000] : undefined,
        },
      ],
      series: [{ label: "Time", value: (u, t) => (t == null ? "–" : formatClock(t).slice(0, 8)) }].concat(series.map(([label, color, fmt]) => ({
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
      charts.connections = makeChart($("chart-connections"), [
        ["WebSocket", COLORS.websocket, String], ["SSE", COLORS.sse, String], ["Long-poll", COLORS.longpoll, String],
      ], true);
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

  function overviewView() {
    showView("overview", "Overview");
    const render = () => {
      if (!latest) return;
      const { stats, inRate, outRate } = latest;
      const c = stats.connections || {};
      tile("tile-websocket", c.websocket, String(c.websocket ?? "–"));
      tile("tile-sse", c.sse, String(c.sse ?? "–"));
      tile("tile-longpoll", c.longpoll, String(c.longpoll ?? "–"));
      tile("tile-in-rate", inRate, rate(inRate));
      tile("tile-out-rate", outRate, rate(outRate));
      tile("tile-uptime", stats.uptime, duration(stats.uptime));
      tile("tile-publishers", stats.publishers, String(stats.publishers ?? "–"));
      tile("tile-centers", stats.centers, String(stats.centers ?? "–"));
      tile("tile-centers-live", stats.centers_live, String(stats.centers_live ?? "–"));
      tile("tile-dropped", stats.dropped_subscribers, String(stats.dropped_subscribers ?? "–"));
      $("tile-uptime").title = stats.uptime != null ? `${Math.floor(stats.uptime)} seconds` : "";
      const line = $("node-line");
      line.textContent = "";
      const node = el("code", { text: stats.node || "?" });
      if (stats.store === "redis") {
        line.append("This page talks to node ", node,
          " of a cluster sharing Redis: connections and message rates are this node's; publishers and centers are the cluster's.");
      } else {
        line.append("Node ", node, ` · store ${stats.store || "?"}`);
      }
      if (ensureCharts()) {
        charts.connections.setData([samples.t, samples.websocket, samples.sse, samples.longpoll]);
        charts.messages.setData([samples.t, samples.in, samples.out]);
        // the legend says the latest figures, unless the pointer is over a chart
        for (const chart of Object.values(charts)) {
          if (chart.cursor.left == null || chart.cursor.left < 0) chart.setLegend({ idx: samples.t.length - 1 });
        }
        // what the charts show last, for whoever reads the page rather than the picture
        const last = samples.t.length - 1;
        Object.assign($("chart-connections").dataset, {
          points: String(samples.t.length),
          last: JSON.stringify({ websocket: samples.websocket[last], sse: samples.sse[last], longpoll: samples.longpoll[last] }),
        });
        Object.assign($("chart-messages").dataset, {
          points: String(samples.t.length),
          last: JSON.stringify({ in: samples.in[last], out: samples.out[last] }),
        });
      }
    };
    overview = { render };
    // the charts are sized once the view is laid out
    requestAnimationFrame(render);
    return { stop() { overview = null; } };
  }

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
    const note = $("secret-copied");
    try {
      await navigator.clipboard.writeText($("secret-value").textContent);
      note.textContent = "Copied to the clipboard.";
    } catch (error) {
      note.textContent = `Copying was refused (${error.message}): select the secret and copy it by hand.`;
    }
  });

  let publishersNow = null;   // the publishers view on screen: {load()}

  function publishersView() {
    showView("publishers", "Publishers");
    let live = true;
    const load = async () => {
      try {
        const body = await api("GET", "/admin/v1/publishers");
        if (live) renderPublishers(body.publishers || []);
      } catch (error) {
        report(error, "Listing publishers");
      }
    };
    publishersNow = { load };
    load();
    return { stop() { live = false; publishersNow = null; hideSecret(); } };
  }

  function renderPublishers(publishers) {
    const body = $("publishers-body");
    body.textContent = "";
    publishers.sort((a, b) => a.name.localeCompare(b.name));
    for (const publisher of publishers) {
      const link = el("a", { text: publisher.name, attrs: { href: `#/publishers/${enc(publisher.name)}` } });
      const rotate = el("button", { className: "btn btn-small", text: "Rotate secret", attrs: { type: "button" } });
      rotate.addEventListener("click", () => rotatePublisher(publisher.name));
      const remove = el("button", { className: "btn btn-small btn-ghost btn-link-danger", text: "Remove", attrs: { type: "button" } });
      remove.addEventListener("click", () => removePublisher(publisher));
      const centers = el("a", {
        className: "btn btn-small", text: "Centers",
        attrs: { href: `#/publishers/${enc(publisher.name)}`, "aria-label": `Centers of ${publisher.name}` },
      });
      const created = el("td", { text: formatDate(publisher.created), attrs: { "data-label": "Created" } });
      created.title = ago(publisher.created);
      body.append(el("tr", { attrs: { "data-publisher": publisher.name } },
        el("td", { className: "name", attrs: { "data-label": "Name" } }, link),
        el("td", { className: "num", text: publisher.centers, attrs: { "data-label": "Centers" } }),
        created,
        // What a Pusher library is configured with: public, so shown every time.
        el("td", { className: "mono app-id", text: publisher.pusher?.app_id ?? "", attrs: { "data-label": "App id" } }),
        el("td", { className: "mono app-key", text: publisher.pusher?.key ?? "", attrs: { "data-label": "Key" } }),
        el("td", {}, el("div", { className: "actions" }, centers, rotate, remove)),
      ));
    }
    $("publishers-empty").hidden = publishers.length > 0;
    $("publishers-table").hidden = publishers.length === 0;
  }

  $("add-publisher").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("add-publisher-name");
    const name = input.value.trim();
    if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) {
      say("error", "A publisher name is 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit.");
      input.focus();
      return;
    }
    try {
      const body = await api("POST", "/admin/v1/publishers", { json: { name } });
      input.value = "";
      hush();
      showSecret(body.name, body.secret, false);
      if (publishersNow) publishersNow.load();
    } catch (error) {
      report(error, `Adding publisher ${name}`);
    }
  });

  async function rotatePublisher(name) {
    if (!await ask($("rotate-dialog"), name)) return;
    try {
      const body = await api("POST", `/admin/v1/publishers/${enc(name)}/rotate`);
      hush();
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
      await api("DELETE", `/admin/v1/publishers/${enc(publisher.name)}`);
      if ($("secret-box").dataset.publisher === publisher.name) hideSecret();
      say("ok", `Publisher ${publisher.name} removed.`, { seconds: 8 });
      if (publishersNow) publishersNow.load();
    } catch (error) {
      report(error, `Removing publisher ${publisher.name}`);
    }
  }

  // centers of a publisher

  let centersNow = null;   // the centers view on screen: {publisher, load()}

  function centersView(publisher) {
    showView("centers", `Centers of ${publisher}`);
    $("centers-publisher").textContent = publisher;
    $("centers-body").textContent = "";
    $("centers-empty").hidden = true;
    let live = true;
    let timer = null;
    const load = async () => {
      clearTimeout(timer);
      try {
        const body = await api("GET", `/admin/v1/publishers/${enc(publisher)}/centers`);
        if (!live) return;
        renderCenters(publisher, body.centers || []);
        hush("centers");
      } catch (error) {
        if (!live) return;
        report(error, `Listing the centers of ${publisher}`, "centers");
        if (error instanceof ApiError && error.status === 404) return;   // nothing to refresh
      }
      if (live) timer = setTimeout(load, CENTERS_MS);
    };
    centersNow = { publisher, load };
    load();
    return { stop() { live = false; clearTimeout(timer); centersNow = null; } };
  }

  function renderCenters(publisher, centers) {
    const body = $("centers-body");
    body.textContent = "";
    centers.sort((a, b) => a.name.localeCompare(b.name));
    for (const center of centers) {
      const flags = el("td", { attrs: { "data-label": "Flags" } },
        el("span", { className: center.private ? "badge badge-private" : "badge badge-public", text: center.private ? "private" : "public" }),
        center.presence ? el("span", { className: "badge badge-presence", text: "presence" }) : null);
      const when = el("td", { text: ago(center.last_ts), attrs: { "data-label": "When" } });
      if (typeof center.last_ts === "number") when.title = formatDate(center.last_ts);
      const tail = el("a", {
        className: "btn btn-small", text: "Tail",
        attrs: { href: `#/tail/${enc(publisher)}/${enc(center.name)}`, "aria-label": `Live tail of ${center.name}` },
      });
      const remove = el("button", { className: "btn btn-small btn-ghost btn-link-danger", text: "Delete", attrs: { type: "button" } });
      remove.addEventListener("click", () => deleteCenter(publisher, center.name));
      body.append(el("tr", { attrs: { "data-center": center.name } },
        el("td", { className: "name", text: center.name, attrs: { "data-label": "Name" } }),
        flags,
        el("td", { className: "num", text: center.subscribers ?? 0, attrs: { "data-label": "Subscribers" } }),
        el("td", { className: "num", text: center.presence ? (center.members ?? 0) : "—", attrs: { "data-label": "Members" } }),
        el("td", { className: "num", text: center.history ?? "—", attrs: { "data-label": "History" } }),
        el("td", { className: "mono", text: center.last_id ?? "—", attrs: { "data-label": "Last message" } }),
        when,
        el("td", {}, el("div", { className: "actions" }, tail, remove)),
      ));
    }
    $("centers-empty").hidden = centers.length > 0;
    $("centers-table").hidden = centers.length === 0;
  }

  $("add-center-presence").addEventListener("change", (event) => {
    if (event.target.checked) $("add-center-private").checked = true;
  });
  $("add-center-private").addEventListener("change", (event) => {
    if (!event.target.checked) $("add-center-presence").checked = false;
  });

  $("add-center").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!centersNow) return;
    const { publisher } = centersNow;
    const name = $("add-center-name").value.trim();
    if (!name) {
      say("error", "Give the center a name.");
      $("add-center-name").focus();
      return;
    }
    const options = { private: $("add-center-private").checked, presence: $("add-center-presence").checked };
    for (const key of ["history", "ttl"]) {
      const value = $(`add-center-${key}`).value.trim();
      if (value === "") continue;
      if (!/^\d+$/.test(value)) {
        say("error", `${key === "ttl" ? "TTL" : "History"} is a whole number, or empty for the server's default.`);
        return;
      }
      options[key] = Number(value);
    }
    try {
      const response = await api("PUT", centerPath(publisher, name), { json: options, raw: true });
      if (response.status === 201) {
        say("ok", `Center ${name} created.`, { seconds: 6 });
        $("add-center").reset();
      } else {
        say("info", `Center ${name} exists already.`, { seconds: 8 });
      }
      if (centersNow) centersNow.load();
    } catch (error) {
      report(error, `Creating center ${name}`);
    }
  });

  async function deleteCenter(publisher, name) {
    if (!await ask($("delete-center-dialog"), name)) return;
    try {
      await api("DELETE", centerPath(publisher, name));
      say("ok", `Center ${name} deleted.`, { seconds: 6 });
      if (centersNow) centersNow.load();
    } catch (error) {
      report(error, `Deleting center ${name}`);
    }
  }

  // live tail: the SSE stream of /tail, read with fetch() (EventSource sends no Authorization)

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

  let tail = null;   // the tail on screen

  function tailView(publisher, center) {
    showView("tail", `Tail of ${center}`);
    $("tail-center").textContent = center;
    const link = $("tail-publisher-link");
    link.textContent = publisher;
    link.href = `#/publishers/${enc(publisher)}`;
    const state = {
      publisher, center, controller: null, retry: null, live: true, ended: false,
      paused: false, held: [], messages: 0, presence: 0, arrivedPaused: 0,
    };
    tail = state;
    clearTail();
    setPaused(false);
    connectTail(state);
    return {
      stop() {
        state.live = false;
        clearTimeout(state.retry);
        if (state.controller) state.controller.abort();
        tail = null;
      },
    };
  }

  function tailState(kind, text) {
    $("tail-dot").dataset.state = kind;
    $("tail-state").textContent = text;
  }

  async function connectTail(state) {
    const controller = new AbortController();
    state.controller = controller;
    tailState("connecting", "Connecting…");
    let response;
    try {
      response = await api("GET", `${centerPath(state.publisher, state.center)}/tail`, {
        signal: controller.signal, raw: true,
      });
    } catch (error) {
      if (!state.live || error.name === "AbortError" || error instanceof SignedOut) return;
      report(error, `Tailing ${state.center}`, "tail");
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
        tailState("error", `Not tailing: ${error.message}`);
        return;
      }
      retryTail(state);
      return;
    }
    hush("tail");
    const parse = eventStream((type, data, id) => tailEvent(state, type, data, id), () => {
      state.heard = Date.now();
    });
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
    note(state, "The stream was cut: reconnecting. Messages published meanwhile are not shown here.");
    retryTail(state);
  }

  function retryTail(state) {
    tailState("connecting", `Disconnected: reconnecting in ${TAIL_RETRY_MS / 1000} s…`);
    state.retry = setTimeout(() => { if (state.live) connectTail(state); }, TAIL_RETRY_MS);
  }

  function tailEvent(state, type, data, id) {
    if (!state.live) return;
    let item;
    try {
      item = JSON.parse(data);
    } catch (error) {
      say("error", `The tail sent an event that is not JSON (${type}): ${data.slice(0, 200)}`);
      return;
    }
    if (type === "hello") {
      const where = item.position ? ` (position ${item.position})` : "";
      tailState(state.paused ? "paused" : "live", `${state.paused ? "Paused" : "Live"}${where}`);
      state.position = item.position;
      return;
    }
    if (type === "end") {
      if (item.reason !== "deleted") {
        // the daemon stopping, or this page reading too slowly: the stream is cut and retried
        const why = item.reason === "slow" ? "this page fell too far behind" : item.reason === "stopping"
          ? "the daemon is stopping" : `the server ended it (${item.reason})`;
        note(state, `The tail was ended: ${why}.`);
        return;
      }
      state.ended = true;
      tailState("ended", "Ended: the center was deleted.");
      note(state, "The tail ended: the center was deleted.");
      return;
    }
    // item.event: the message's event, when it is not "message"
    if (type === "message") arrive(state, { kind: "message", id: item.id ?? id, ts: item.ts, data: item.data, event: item.event });
    else if (type === "members" || type === "join" || type === "leave") arrive(state, { kind: type, ts: Date.now() / 1000, item });
  }

  function arrive(state, entry) {
    if (entry.kind === "message") state.messages += 1; else state.presence += 1;
    if (state.paused) {
      state.held.push(entry);
      state.arrivedPaused += 1;
      const pill = $("tail-pending");
      pill.dataset.count = String(state.held.length);
      pill.textContent = `${state.held.length} new while paused`;
      pill.hidden = false;
    } else {
      show(entry, true);
    }
    counts(state);
  }

  function note(state, text) {
    show({ kind: "note", ts: Date.now() / 1000, text }, true);
  }

  function presenceText(entry) {
    const item = entry.item;
    const who = (member) => (member.info != null ? `${member.uid} ${JSON.stringify(member.info)}` : String(member.uid));
    if (entry.kind === "members") {
      const members = item.members || [];
      return members.length ? `${plural(members.length, "member", "members")}: ${members.map(who).join(", ")}` : "no members";
    }
    if (entry.kind === "join") return `${who(item)} joined`;
    return `${item.uid} left`;
  }

  function show(entry, fresh) {
    const list = $("tail-list");
    const node = el("li", { className: `entry entry-${entry.kind === "message" ? "message" : entry.kind === "note" ? "note" : "presence"}` });
    node.dataset.kind = entry.kind;
    const text = entry.kind === "message" ? entry.data : entry.kind === "note" ? entry.text : presenceText(entry);
    if (entry.kind === "message") node.dataset.id = entry.id;
    if (entry.kind === "message" && entry.event) node.dataset.event = entry.event;
    if (entry.kind !== "message" && entry.kind !== "note" && entry.item.uid != null) node.dataset.uid = entry.item.uid;
    const label = entry.kind === "message" ? (entry.event ? `${entry.id} ${entry.event}` : entry.id) : entry.kind;
    node.append(
      el("span", { className: "entry-id", text: label }),
      el("time", { className: "entry-time", text: typeof entry.ts === "number" ? formatClock(entry.ts) : "" }),
      el("pre", { className: "entry-data", text }),
    );
    if (fresh) node.classList.add("entry-new");
    list.prepend(node);
    while (list.children.length > TAIL_KEEP) list.lastElementChild.remove();
    $("tail-empty").hidden = true;
  }

  function counts(state) {
    const parts = [plural(state.messages, "message", "messages")];
    if (state.presence) parts.push(plural(state.presence, "presence event", "presence events"));
    $("tail-counts").textContent = parts.join(", ");
  }

  function clearTail() {
    $("tail-list").textContent = "";
    $("tail-empty").hidden = false;
    $("tail-counts").textContent = "";
    const pill = $("tail-pending");
    pill.hidden = true;
    pill.dataset.count = "0";
    if (tail) {
      tail.held = [];
      tail.messages = 0;
      tail.presence = 0;
    }
  }

  function setPaused(paused) {
    const button = $("tail-pause");
    button.textContent = paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", String(paused));
    if (!tail) return;
    tail.paused = paused;
    if (tail.ended || !tail.controller) return;
    const where = tail.position ? ` (position ${tail.position})` : "";
    if (paused) {
      tail.arrivedPaused = 0;
      tailState("paused", `Paused: what arrives is held until you resume${where}`);
    } else {
      const held = tail.held;
      tail.held = [];
      for (const entry of held) show(entry, true);
      $("tail-pending").hidden = true;
      $("tail-pending").dataset.count = "0";
      if (held.length) say("info", `${plural(held.length, "item", "items")} arrived while paused.`, { seconds: 6, source: "tail" });
      tailState("live", `Live${where}`);
    }
  }

  $("tail-pause").addEventListener("click", () => setPaused(!(tail && tail.paused)));
  $("tail-clear").addEventListener("click", clearTail);

  $("tail-publish").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!tail) return;
    const { publisher, center } = tail;
    const box = $("tail-publish-text");
    const text = box.value;
    if (text === "") {
      say("error", "Write the text to publish first.");
      box.focus();
      return;
    }
    try {
      const body = await api("POST", `${centerPath(publisher, center)}/messages`, { text });
      box.value = "";
      say("ok", `Published ${body.id} to ${plural(body.subscribers, "subscriber", "subscribers")}.`, { seconds: 6 });
    } catch (error) {
      report(error, `Publishing to ${center}`);
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
