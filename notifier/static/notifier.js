/*
 * notifier.js: subscribe a page to a notifier center.
 *
 *   var sub = Notifier.subscribe("https://push.example.com/sub/mysite/news", {
 *     token: "...",              // for private centers: a JWT minted by the site
 *     since: null,               // an id to resume after (else: live messages only)
 *     transports: ["websocket", "sse", "longpoll"],   // tried in this order
 *     onMessage: function (data, message) {},         // text; {id, center, data, ts}
 *     onStatus: function (status, detail) {}          // see below
 *   });
 *   sub.close();
 *
 * Statuses: "connecting" {transport}, "connected" {transport}, "reconnecting"
 * {transport, delay} (milliseconds until the next try), "lost" {transport}
 * (messages were missed: the server no longer retained them), "failed"
 * {transport, status, error} (the server refused for good: no such center,
 * bad token), "closed".
 *
 * It resumes from the last id it saw after any disconnect, so nothing the
 * center still retains is lost and nothing is delivered twice. A transport
 * that never opens is given up for the next one; once one has worked, it is
 * retried with exponential backoff and jitter. No dependencies, no build.
 */
(function (root) {
  "use strict";

  var TRANSPORTS = ["websocket", "sse", "longpoll"];
  var BACKOFF_BASE = 500;     // ms
  var BACKOFF_MAX = 30000;    // ms
  var LONGPOLL_TIMEOUT = 30;  // s
  var SEEN_IDS = 256;         // ids remembered to drop any duplicate

  function query(url, params) {
    var parts = [];
    for (var name in params) {
      if (params[name] !== null && params[name] !== undefined) {
        parts.push(encodeURIComponent(name) + "=" + encodeURIComponent(params[name]));
      }
    }
    if (!parts.length) return url;
    return url + (url.indexOf("?") === -1 ? "?" : "&") + parts.join("&");
  }

  function Subscription(url, options) {
    this.url = url.replace(/^ws/, "http");
    this.token = options.token || null;
    this.lastId = options.since || null;
    this.onMessage = options.onMessage || function () {};
    this.onStatus = options.onStatus || function () {};
    this.transports = (options.transports || TRANSPORTS).filter(function (t) {
      return TRANSPORTS.indexOf(t) !== -1;
    });
    this.index = 0;           // the transport in use
    this.worked = false;      // whether it has ever opened
    this.attempt = 0;         // failures in a row, for the backoff
    this.closed = false;
    this.seen = [];
    this.timer = null;
    this.stop = null;         // ends the current connection
    this.begin();
  }

  // Without an id to resume from, first ask where the center stands, so that
  // a disconnect before the first message loses nothing either.
  Subscription.prototype.begin = function () {
    var self = this;
    if (this.lastId !== null || typeof fetch === "undefined") { this.connect(); return; }
    fetch(query(this.url, { timeout: 0, token: this.token }), { cache: "no-store" })
      .then(function (response) {
        var cursor = response.headers.get("Notifier-Cursor");
        if (response.status === 200 && cursor && self.lastId === null) self.lastId = cursor;
      })
      .catch(function () { /* the transports will tell */ })
      .then(function () { self.connect(); });
  };

  Subscription.prototype.status = function (status, detail) {
    detail = detail || {};
    detail.transport = this.transports[this.index];
    try { this.onStatus(status, detail); } catch (e) { setTimeout(function () { throw e; }); }
  };

  Subscription.prototype.receive = function (message) {
    if (this.seen.indexOf(message.id) !== -1) return;
    this.seen.push(message.id);
    if (this.seen.length > SEEN_IDS) this.seen.shift();
    this.lastId = message.id;
    try { this.onMessage(message.data, message); } catch (e) { setTimeout(function () { throw e; }); }
  };

  Subscription.prototype.recovery = function (recovered) {
    if (!recovered) this.status("lost");
  };

  Subscription.prototype.opened = function () {
    this.worked = true;
    this.attempt = 0;
    this.status("connected");
  };

  // The connection ended: `opened` says whether it ever worked.
  Subscription.prototype.ended = function (opened) {
    this.stop = null;
    if (this.closed) return;
    if (!opened && !this.worked && this.index < this.transports.length - 1) {
      this.index += 1;        // never got through: the next transport, now
      this.connect();
      return;
    }
    if (!opened && !this.worked) this.index = 0;  // none got through: start over, later
    var ceiling = Math.min(BACKOFF_MAX, BACKOFF_BASE * Math.pow(2, this.attempt));
    var delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    this.attempt += 1;
    this.status("reconnecting", { delay: delay });
    var self = this;
    this.timer = setTimeout(function () { self.timer = null; self.connect(); }, delay);
  };

  Subscription.prototype.fail = function (status, error) {
    this.status("failed", { status: status, error: error });
    this.close();
  };

  Subscription.prototype.connect = function () {
    if (this.closed) return;
    var transport = this.transports[this.index];
    this.status("connecting");
    this.stop = this[transport]();
  };

  Subscription.prototype.websocket = function () {
    var self = this, opened = false, done = false;
    var params = { format: "json", since: this.lastId, token: this.token };
    var ws;
    try {
      ws = new WebSocket(query(this.url.replace(/^http/, "ws"), params));
    } catch (e) {
      setTimeout(function () { self.ended(false); });
      return function () {};
    }
    ws.onopen = function () { opened = true; self.opened(); };
    ws.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.id === undefined && frame.recovered !== undefined) self.recovery(frame.recovered);
      else self.receive(frame);
    };
    ws.onclose = function () {
      if (done) return;
      done = true;
      self.ended(opened);
    };
    return function () { done = true; ws.onclose = null; ws.close(); };
  };

  Subscription.prototype.sse = function () {
    var self = this, opened = false, done = false;
    if (typeof EventSource === "undefined") {
      setTimeout(function () { self.ended(false); });
      return function () {};
    }
    var source = new EventSource(query(this.url, { since: this.lastId, token: this.token }));
    source.onopen = function () { opened = true; self.opened(); };
    source.addEventListener("recovery", function (event) {
      try { self.recovery(JSON.parse(event.data).recovered); } catch (e) { /* malformed: ignore */ }
    });
    source.addEventListener("message", function (event) {
      self.receive({ id: event.lastEventId, data: event.data });
    });
    source.onerror = function () {
      // The browser would reconnect by itself; ours resumes with backoff.
      if (done) return;
      done = true;
      source.close();
      self.ended(opened);
    };
    return function () { done = true; source.close(); };
  };

  Subscription.prototype.longpoll = function () {
    var self = this, opened = false, done = false;
    var controller = typeof AbortController !== "undefined" ? new AbortController() : null;

    function poll() {
      // The first request answers at once: it tells whether we got through.
      var timeout = opened ? LONGPOLL_TIMEOUT : 0;
      var url = query(self.url, { since: self.lastId, timeout: timeout, token: self.token });
      fetch(url, { signal: controller ? controller.signal : undefined, cache: "no-store" })
        .then(function (response) {
          if (response.status === 200) {
            var cursor = response.headers.get("Notifier-Cursor");
            return response.json().then(function (body) {
              if (!body.last_id && cursor) body.last_id = cursor;
              return body;
            });
          }
          return response.json().then(function (body) {
            var error = new Error(body.message || "refused");
            error.status = response.status;
            error.code = body.error;
            throw error;
          }, function () {
            var error = new Error("HTTP " + response.status);
            error.status = response.status;
            throw error;
          });
        })
        .then(function (body) {
          if (done) return;
          if (!opened) { opened = true; self.opened(); }
          self.recovery(body.recovered);
          body.messages.forEach(function (message) { self.receive(message); });
          if (body.last_id) self.lastId = body.last_id;
          poll();
        })
        .catch(function (error) {
          if (done) return;
          done = true;
          var status = error.status;
          if (status && status >= 400 && status < 500 && status !== 408 && status !== 429) {
            self.fail(status, error.code || error.message);
          } else {
            self.ended(opened);
          }
        });
    }
    poll();
    return function () { done = true; if (controller) controller.abort(); };
  };

  Subscription.prototype.close = function () {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.stop) this.stop();
    this.stop = null;
    this.status("closed");
  };

  var Notifier = {
    subscribe: function (url, options) {
      var subscription = new Subscription(url, options || {});
      return {
        close: function () { subscription.close(); },
        get lastId() { return subscription.lastId; },
        get transport() { return subscription.transports[subscription.index]; }
      };
    }
  };

  if (typeof module === "object" && module.exports) module.exports = Notifier;
  else root.Notifier = Notifier;
})(typeof self !== "undefined" ? self : this);
