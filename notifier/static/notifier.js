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
 * or, so that a subscription outlives its tokens, a function that fetches a
 * fresh one from the site (a string, or a Promise of one):
 *
 *   var sub = Notifier.subscribe("https://push.example.com/sub/mysite/user.17.inbox", {
 *     token: function () {
 *       return fetch("/notifier/token", { credentials: "same-origin" })
 *         .then(function (response) {
 *           if (!response.ok) throw new Error("no token: HTTP " + response.status);
 *           return response.text();
 *         });
 *     },
 *     onMessage: function (data, message) {}
 *   });
 *
 * Statuses: "connecting" {transport}, "connected" {transport}, "reconnecting"
 * {transport, delay} (milliseconds until the next try; with `error` when the
 * token function failed), "lost" {transport} (messages were missed: the
 * server no longer retained them), "failed" {transport, status, error} (the
 * server refused for good: no such center, bad or expired string token),
 * "closed".
 *
 * It resumes from the last id it saw after any disconnect, so nothing the
 * center still retains is lost and nothing is delivered twice. A transport
 * that never opens is given up for the next one; once one has worked, it is
 * retried with exponential backoff and jitter.
 *
 * A token function is called once per connection attempt: the first, each
 * fallback to another transport, each reconnection (the requests of one
 * long-poll attempt share its token). When it throws or its Promise rejects,
 * the attempt has failed and is retried with backoff. When the server ends
 * a subscription because its token ran out or the publisher's secret
 * changed (WebSocket close 4401, an event stream that ends, a long-poll
 * answered 401), the function is asked for a fresh token and the
 * subscription resumes after a short random delay; a token refused on a new
 * connection is retried with backoff. A string token cannot be renewed: a
 * 4401 or a long-poll's 401 reports "failed" {status: 401} (an event stream
 * that ends is retried, as it cannot be told from a cut). No dependencies,
 * no build.
 */
(function (root) {
  "use strict";

  var TRANSPORTS = ["websocket", "sse", "longpoll"];
  var BACKOFF_BASE = 500;     // ms
  var BACKOFF_MAX = 30000;    // ms
  var LONGPOLL_TIMEOUT = 30;  // s
  var SEEN_IDS = 256;         // ids remembered to drop any duplicate
  var RENEW_DELAY = 1000;     // ms: a renewal reconnects after 1/4 to all of this
  var RENEW_WINDOW = 3000;    // ms: a token that lasted less is renewed with backoff
  var UNAUTHORIZED = 4401;    // WebSocket close code: the token is no longer valid

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
    this.renewable = typeof options.token === "function";
    this.tokenSource = this.renewable ? options.token : null;
    this.token = this.renewable ? null : options.token || null;
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
    this.started = false;     // whether the first attempt got as far as begin()
    this.generation = 0;      // connection attempts, to ignore a stale token
    this.openedAt = 0;        // when the current connection opened
    this.renewals = 0;        // renewals in a row of tokens that did not last
    this.connect();
  }

  // Calls back with the token for a connection attempt: the string given, or
  // what the token function returns or resolves to.
  Subscription.prototype.obtainToken = function (callback, errback) {
    if (!this.renewable) { callback(this.token); return; }
    var value;
    try {
      value = this.tokenSource();
    } catch (e) {
      errback(e);
      return;
    }
    if (value && typeof value.then === "function") {
      value.then(function (token) { callback(token || null); }, function (e) {
        errback(e === undefined || e === null ? new Error("token refused") : e);
      });
    } else {
      callback(value || null);
    }
  };

  // Without an id to resume from, first ask where the center stands, so that
  // a disconnect before the first message loses nothing either.
  Subscription.prototype.begin = function (token, then) {
    var self = this;
    if (this.lastId !== null || typeof fetch === "undefined") { then(); return; }
    fetch(query(this.url, { timeout: 0, token: token }), { cache: "no-store" })
      .then(function (response) {
        var cursor = response.headers.get("Notifier-Cursor");
        if (response.status === 200 && cursor && self.lastId === null) self.lastId = cursor;
      })
      .catch(function () { /* the transports will tell */ })
      .then(function () { then(); });
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
    this.openedAt = new Date().getTime();
    this.status("connected");
  };

  // The connection ended: `opened` says whether it ever worked, `renew`
  // whether the server ended it because its token is no longer valid.
  Subscription.prototype.ended = function (opened, renew) {
    this.stop = null;
    if (this.closed) return;
    if (renew && opened) { this.renew(); return; }
    if (!opened && !this.worked && this.index < this.transports.length - 1) {
      this.index += 1;        // never got through: the next transport, now
      this.connect();
      return;
    }
    if (!opened && !this.worked) this.index = 0;  // none got through: start over, later
    this.retry();
  };

  // A failed attempt: the next one after an exponential backoff with jitter.
  Subscription.prototype.retry = function (detail) {
    var ceiling = Math.min(BACKOFF_MAX, BACKOFF_BASE * Math.pow(2, this.attempt));
    this.attempt += 1;
    this.later(Math.round(ceiling / 2 + Math.random() * ceiling / 2), detail);
  };

  // The token ran out: a fresh one soon, at a random moment so that the
  // subscribers a secret rotation cut at once do not all come back at once.
  // Tokens that keep running out as soon as they are used back off.
  Subscription.prototype.renew = function () {
    var lasted = new Date().getTime() - this.openedAt;
    this.renewals = lasted < RENEW_WINDOW ? this.renewals + 1 : 0;
    var ceiling = Math.min(BACKOFF_MAX, RENEW_DELAY * Math.pow(2, this.renewals));
    this.later(Math.round(ceiling / 4 + Math.random() * ceiling * 3 / 4));
  };

  Subscription.prototype.later = function (delay, detail) {
    detail = detail || {};
    detail.delay = delay;
    this.status("reconnecting", detail);
    var self = this;
    this.timer = setTimeout(function () { self.timer = null; self.connect(); }, delay);
  };

  Subscription.prototype.fail = function (status, error) {
    this.status("failed", { status: status, error: error });
    this.close();
  };

  // One connection attempt: a token, then the transport in use.
  Subscription.prototype.connect = function () {
    if (this.closed) return;
    var self = this, generation = ++this.generation;
    this.status("connecting");
    this.obtainToken(function (token) {
      if (self.closed || generation !== self.generation) return;
      if (self.started) { self.open(token); return; }
      self.started = true;
      self.begin(token, function () {
        if (!self.closed && generation === self.generation) self.open(token);
      });
    }, function (error) {
      if (self.closed || generation !== self.generation) return;
      self.retry({ error: String(error && error.message || error) });
    });
  };

  Subscription.prototype.open = function (token) {
    this.stop = this[this.transports[this.index]](token);
  };

  Subscription.prototype.websocket = function (token) {
    var self = this, opened = false, done = false;
    var params = { format: "json", since: this.lastId, token: token };
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
    ws.onclose = function (event) {
      if (done) return;
      done = true;
      if (event && event.code === UNAUTHORIZED && !self.renewable) {
        self.fail(401, event.reason || "unauthorized");
      } else {
        self.ended(opened, event && event.code === UNAUTHORIZED);
      }
    };
    return function () { done = true; ws.onclose = null; ws.close(); };
  };

  Subscription.prototype.sse = function (token) {
    var self = this, opened = false, done = false;
    if (typeof EventSource === "undefined") {
      setTimeout(function () { self.ended(false); });
      return function () {};
    }
    var source = new EventSource(query(this.url, { since: this.lastId, token: token }));
    source.onopen = function () { opened = true; self.opened(); };
    source.addEventListener("recovery", function (event) {
      try { self.recovery(JSON.parse(event.data).recovered); } catch (e) { /* malformed: ignore */ }
    });
    source.addEventListener("message", function (event) {
      self.receive({ id: event.lastEventId, data: event.data });
    });
    source.onerror = function () {
      // The browser would reconnect by itself; ours resumes with backoff,
      // or soon with a fresh token: a private center's stream ends when its
      // token does, and an event stream does not say why it ended.
      if (done) return;
      done = true;
      source.close();
      self.ended(opened, self.renewable);
    };
    return function () { done = true; source.close(); };
  };

  Subscription.prototype.longpoll = function (token) {
    var self = this, opened = false, done = false;
    var controller = typeof AbortController !== "undefined" ? new AbortController() : null;

    function poll() {
      // The first request answers at once: it tells whether we got through.
      var timeout = opened ? LONGPOLL_TIMEOUT : 0;
      var url = query(self.url, { since: self.lastId, timeout: timeout, token: token });
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
          if (status === 401 && self.renewable) {
            self.ended(opened, true);   // a fresh token: soon if this one had worked
          } else if (status && status >= 400 && status < 500 && status !== 408 && status !== 429) {
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
