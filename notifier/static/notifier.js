/*
 * notifier.js: subscribe a page to notifier centers.
 *
 *   var sub = Notifier.subscribe("https://push.example.com/sub/mysite/news", {
 *     token: "...",              // for private centers: a JWT minted by the site
 *     since: null,               // a cursor to resume after (else: live messages only)
 *     transports: ["websocket", "sse", "longpoll"],   // tried in this order
 *     shared: true,              // one connection for all of the origin's tabs
 *     onMessage: function (data, message) {},         // text; {id, center, data, ts, event}
 *     onStatus: function (status, detail) {},         // see below
 *     onPresence: function (item) {}                  // presence centers: see below
 *   });
 *   sub.lastId;                  // the cursor: where a new subscription would resume
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
 * Several centers of one publisher on one connection ("multiplexed"): list
 * them, separated by commas, 2 to 32 of them:
 *
 *   Notifier.subscribe("https://push.example.com/sub/mysite/news,user.17,node.5", {
 *     onMessage: function (data, message) {
 *       if (message.center === "user.17") { ... }
 *     }
 *   });
 *
 * `message.center` says which center each message comes from (on every
 * transport). Messages arrive in publish order across the centers (a batch
 * in its order), nothing twice. The cursor (`since`,
 * `lastId`) of such a subscription is compound: the position of each center
 * joined with "," in the order of the URL ("3f2a91c0-17,9b01e4d2-0"; an
 * empty entry: live messages only for that center). The one token given
 * must grant every private center of the list.
 *
 * Statuses: "connecting" {transport}, "connected" {transport}, "reconnecting"
 * {transport, delay} (milliseconds until the next try; with `error` when the
 * token function failed), "lost" {transport, centers} (messages were missed:
 * the server no longer retained them; `centers` names the centers of a
 * multiplexed subscription that could not be resumed; `error` instead when
 * a shared tab given `since` could not fetch what it missed), "failed" {transport,
 * status, error} (the server refused for good: no such center, bad or
 * expired string token), "closed".
 *
 * Presence centers (a token with `uid`): `onPresence` is given the server's
 * presence items as they come, `{presence: "members", center, members:
 * [{uid, info}, ...]}` when a connection opens (again after each
 * reconnection), then `{presence: "join", center, uid, info}` and
 * `{presence: "leave", center, uid}`. WebSocket and SSE carry them,
 * long-poll does not.
 *
 * It resumes from the last position it saw after any disconnect (every
 * center of a multiplexed subscription from its own), so nothing the server
 * still retains is lost and nothing is delivered twice. A transport that
 * never opens is given up for the next one; once one has worked, it is
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
 * that ends is retried, as it cannot be told from a cut).
 *
 * Tab sharing (`shared`, true by default where the browser has both
 * BroadcastChannel and Web Locks, `navigator.locks`, which needs https or
 * localhost; false: one connection per subscription, as without them). The
 * tabs of one origin subscribed to the same URL share one connection: the
 * tab holding the Web Lock "notifier:" + url (the URL with ws:// read as
 * http://) is the leader; it alone connects, with its own options (token,
 * transports), and posts every message, with the cursor after it, on the
 * BroadcastChannel of the same name; the other tabs (followers) deliver
 * what they are posted to their own onMessage. Every tab keeps the cursor
 * of what it has seen, so:
 *
 *  - a leader that closes (close(), the tab closed or navigated away)
 *    releases the lock; a waiting tab takes it, connects with its own
 *    options and resumes from its cursor: every tab gets every message,
 *    once, in order;
 *  - a tab that the browser freezes or hides (the `freeze` event of a
 *    background tab, `pagehide` of a page leaving, which may be kept in
 *    the back/forward cache) gives up at once: a leader ends its
 *    connection, posts its cursor and releases the lock, which the next
 *    tab takes as above, resuming from the last message any tab saw; a
 *    follower withdraws its lock request. Back again (`resume`, or
 *    `pageshow` from the cache), it fetches what it missed after its
 *    cursor as a tab given `since` does (below) and follows, or leads if
 *    no other tab does;
 *  - a leader posts a heartbeat every second (and answers a follower's
 *    ping at once, even while its timers are throttled in the background);
 *    when a follower has heard nothing for about 3 seconds and its ping is
 *    not answered within a second (the leader's tab hung, or frozen where
 *    the browser tells no `freeze`), it steals the lock and takes over the
 *    same way; a leader whose lock was stolen ends its connection and
 *    follows;
 *  - a tab that joins later is told the leader's cursor and state, and gets
 *    the messages from then on. A tab given `since` that joins as a
 *    follower first fetches what it missed after `since` (long-poll
 *    requests with its own token) and only then delivers what the leader
 *    posts, so it too misses nothing;
 *  - close() in a follower only detaches it.
 *
 * Tabs share only what they subscribe to by the same URL ("news,user.17"
 * and "user.17,news" are two subscriptions). Where a lock request is
 * refused (a sandboxed frame), the tab connects on its own.
 *
 * Every tab that may lead must be able to subscribe: give each the same
 * URL and a token (or token function) that grants it. Statuses in a
 * follower are those of the shared connection: on joining, the leader's
 * current one ("connected" once the shared connection is up), then every
 * "connecting", "connected", "reconnecting" and "lost" the leader reports.
 * A tab that joins (or comes back from a freeze) is given the members the
 * leader knows of each presence center as a "members" item, then every
 * item the leader is given.
 * "failed" and "closed" are each tab's own: a leader that is refused for
 * good reports "failed" and "closed" and lets the next tab try with its
 * own options. In a shared subscription `detail.leader` says whether this
 * tab runs the connection (as does the `leader` property of what subscribe
 * returns).
 *
 * No dependencies, no build.
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
  var HEARTBEAT = 1000;       // ms: how often a leader tells the other tabs it is there
  var TICK = 500;             // ms: how often a tab checks on the leader
  var STALE = 3000;           // ms: a follower that heard nothing for this long pings
  var PING_WAIT = 1000;       // ms: an unanswered ping for this long: take over
  var STATES = ["connecting", "connected", "reconnecting"];
  var PRESENCE = ["members", "join", "leave"];

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

  function now() { return new Date().getTime(); }

  // Calls a page's callback; what it throws is reported, not propagated.
  function call(callback, a, b) {
    try { callback(a, b); } catch (e) { setTimeout(function () { throw e; }); }
  }

  function copy(object) {
    var result = {};
    for (var name in object) {
      if (Object.prototype.hasOwnProperty.call(object, name)) result[name] = object[name];
    }
    return result;
  }

  // The centers of a subscription URL: its last path segment, split at
  // commas (which may be sent as %2C).
  function centersOf(url) {
    var path = url.split("#")[0].split("?")[0];
    var last = path.slice(path.lastIndexOf("/") + 1);
    return last.split(/,|%2C/i).map(function (name) {
      // A name's own comma (a Pusher channel's) is sent encoded twice: %252C.
      try { return decodeURIComponent(name).replace(/%2C/gi, ","); } catch (e) { return name; }
    });
  }

  // A position "{epoch}-{seq}": its parts, or null for anything else.
  function parseId(id) {
    var match = /^(.*)-(\d+)$/.exec(String(id));
    return match ? { epoch: match[1], seq: match[2].replace(/^0+(?=\d)/, "") } : null;
  }

  // Whether position `id` comes after `current` (a position of another
  // epoch, or one that cannot be compared, is taken as new).
  function newer(id, current) {
    if (id === current) return false;
    var a = parseId(id), b = parseId(current);
    if (!a || !b || a.epoch !== b.epoch) return true;
    if (a.seq.length !== b.seq.length) return a.seq.length > b.seq.length;
    return a.seq > b.seq;
  }

  // Calls back with a token: the string given, or what the token function
  // returns or resolves to.
  function obtainToken(token, callback, errback) {
    if (typeof token !== "function") { callback(token || null); return; }
    var value;
    try {
      value = token();
    } catch (e) {
      errback(e);
      return;
    }
    if (value && typeof value.then === "function") {
      value.then(function (result) { callback(result || null); }, function (e) {
        errback(e === undefined || e === null ? new Error("token refused") : e);
      });
    } else {
      callback(value || null);
    }
  }

  // Where a subscription stands: one position per center (null: none yet),
  // and the last ids delivered, so that nothing is delivered twice.
  function Cursor(centers, since) {
    this.centers = centers;
    this.positions = centers.map(function () { return null; });
    this.seen = [];
    this.given = null;        // a `since` of the wrong shape: sent as is, for the server to refuse
    if (since !== null && since !== undefined && since !== "") {
      var entries = this.entries(String(since));
      if (entries) this.fill(String(since));
      else this.given = String(since);
    }
  }

  // The entries of a cursor string, one per center; null if it has not
  // as many.
  Cursor.prototype.entries = function (cursor) {
    if (this.centers.length === 1) return [cursor];
    var entries = cursor.split(",");
    return entries.length === this.centers.length ? entries : null;
  };

  Cursor.prototype.index = function (center) {
    return this.centers.length === 1 ? 0 : this.centers.indexOf(center);
  };

  // The cursor to resume from: null when there is no position at all.
  Cursor.prototype.value = function () {
    var any = this.positions.some(function (position) { return position !== null; });
    if (!any) return this.given;
    if (this.centers.length === 1) return this.positions[0];
    return this.positions.map(function (position) { return position || ""; }).join(",");
  };

  Cursor.prototype.complete = function () {
    return this.positions.every(function (position) { return position !== null; });
  };

  // Moves center `index` to `id` if that is after where it stands.
  Cursor.prototype.advance = function (index, id) {
    var current = this.positions[index];
    if (current !== null && !newer(id, current)) return false;
    this.positions[index] = id;
    return true;
  };

  // Moves every center to its entry in `cursor`, where that is ahead.
  Cursor.prototype.merge = function (cursor) {
    var entries = cursor ? this.entries(String(cursor)) : null;
    if (!entries) return;
    for (var i = 0; i < entries.length; i++) {
      if (entries[i]) this.advance(i, entries[i]);
    }
  };

  // Sets the centers that have no position yet from `cursor`.
  Cursor.prototype.fill = function (cursor) {
    var entries = cursor ? this.entries(String(cursor)) : null;
    if (!entries) return;
    for (var i = 0; i < entries.length; i++) {
      if (entries[i] && this.positions[i] === null) this.positions[i] = entries[i];
    }
  };

  // Whether `message` is new (then its center moves to it), or a duplicate.
  Cursor.prototype.accept = function (message) {
    var index = this.index(message.center);
    if (index === -1) return true;
    var key = index + " " + message.id;
    if (this.seen.indexOf(key) !== -1) return false;
    if (!this.advance(index, message.id)) return false;
    this.seen.push(key);
    if (this.seen.length > SEEN_IDS) this.seen.shift();
    return true;
  };

  // One connection (with its reconnections) to the server. `sink.message`
  // gets each new message, `sink.presence` each presence item, `sink.status`
  // each status.
  function Subscription(url, options, cursor, sink) {
    this.url = url;
    this.token = options.token || null;
    this.renewable = typeof options.token === "function";
    this.cursor = cursor;
    this.multiplexed = cursor.centers.length > 1;
    this.sink = sink;
    this.transports = (options.transports || TRANSPORTS).filter(function (t) {
      return TRANSPORTS.indexOf(t) !== -1;
    });
    this.index = 0;           // the transport in use
    this.worked = false;      // whether it has ever opened
    this.attempt = 0;         // failures in a row, for the backoff
    this.closed = false;
    this.timer = null;
    this.stop = null;         // ends the current connection
    this.started = false;     // whether the first attempt got as far as begin()
    this.generation = 0;      // connection attempts, to ignore a stale token
    this.openedAt = 0;        // when the current connection opened
    this.renewals = 0;        // renewals in a row of tokens that did not last
  }

  // Without a position to resume from (for some center), first ask where
  // the centers stand, so that a disconnect before the first message loses
  // nothing either.
  Subscription.prototype.begin = function (token, then) {
    var self = this;
    if (this.cursor.complete() || this.cursor.given !== null || typeof fetch === "undefined") {
      then();
      return;
    }
    fetch(query(this.url, { timeout: 0, token: token }), { cache: "no-store" })
      .then(function (response) {
        var cursor = response.headers.get("Notifier-Cursor");
        if (response.status === 200 && cursor) self.cursor.fill(cursor);
      })
      .catch(function () { /* the transports will tell */ })
      .then(function () { then(); });
  };

  Subscription.prototype.status = function (status, detail) {
    detail = detail || {};
    detail.transport = this.transports[this.index];
    this.sink.status(status, detail);
  };

  // A message from the server; `after`, the cursor after it when the
  // server tells (an event stream's id).
  Subscription.prototype.receive = function (message, after) {
    if (!message || message.id === undefined) return;
    if (!this.multiplexed && !message.center) message.center = this.cursor.centers[0];
    if (!message.event) message.event = "message";   // the envelope names any other
    var fresh = this.cursor.accept(message);
    if (after) this.cursor.merge(after);
    if (fresh) this.sink.message(message);
  };

  // A presence item ({presence: "members"|"join"|"leave", center, ...}).
  Subscription.prototype.presence = function (item) {
    if (!item || PRESENCE.indexOf(item.presence) === -1) return;
    if (!item.center) item.center = this.cursor.centers[0];
    this.sink.presence(item);
  };

  Subscription.prototype.recovery = function (recovered, lost) {
    if (recovered === false) this.status("lost", lost && lost.length ? { centers: lost } : {});
  };

  Subscription.prototype.opened = function () {
    this.worked = true;
    this.attempt = 0;
    this.openedAt = now();
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
    var lasted = now() - this.openedAt;
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
    obtainToken(this.token, function (token) {
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
    var params = { format: "json", since: this.cursor.value(), token: token };
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
      if (!frame || typeof frame !== "object") return;
      if (frame.presence !== undefined) {
        self.presence(frame);
      } else if (frame.id === undefined) {
        // The first frame: where each center starts (several centers), and
        // whether the resumption was complete.
        if (frame.cursor) self.cursor.merge(frame.cursor);
        if (frame.recovered !== undefined) self.recovery(frame.recovered, frame.lost);
      } else {
        self.receive(frame);
      }
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
    // format=json: every message a "message" event of its envelope, which
    // names its event; an EventSource hears an event named otherwise only
    // by a listener of that name, and the names are the publisher's.
    var source = new EventSource(query(this.url, { format: "json", since: this.cursor.value(), token: token }));
    source.onopen = function () { opened = true; self.opened(); };
    source.addEventListener("recovery", function (event) {
      // Several centers: the stream began with an id, the starting cursor.
      if (self.multiplexed && event.lastEventId) self.cursor.merge(event.lastEventId);
      var body;
      try { body = JSON.parse(event.data); } catch (e) { return; /* malformed: ignore */ }
      self.recovery(body.recovered, body.lost);
    });
    PRESENCE.forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        try { self.presence(JSON.parse(event.data)); } catch (e) { /* malformed: ignore */ }
      });
    });
    source.addEventListener("message", function (event) {
      // The data is the envelope; the id its own, or, with several
      // centers, the compound cursor after it.
      var envelope;
      try { envelope = JSON.parse(event.data); } catch (e) { return; }
      self.receive(envelope, event.lastEventId);
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

  // An answer to a long-poll: its body, or an Error with its status.
  function pollAnswer(response) {
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
  }

  Subscription.prototype.longpoll = function (token) {
    var self = this, opened = false, done = false;
    var controller = typeof AbortController !== "undefined" ? new AbortController() : null;

    function poll() {
      // The first request answers at once: it tells whether we got through.
      var timeout = opened ? LONGPOLL_TIMEOUT : 0;
      var url = query(self.url, { since: self.cursor.value(), timeout: timeout, token: token });
      fetch(url, { signal: controller ? controller.signal : undefined, cache: "no-store" })
        .then(pollAnswer)
        .then(function (body) {
          if (done) return;
          if (!opened) { opened = true; self.opened(); }
          self.recovery(body.recovered, body.lost);
          (body.messages || []).forEach(function (message) { self.receive(message); });
          if (body.last_id) self.cursor.merge(body.last_id);
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

  // Ends the subscription; `quietly`: without reporting "closed".
  Subscription.prototype.close = function (quietly) {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.stop) this.stop();
    this.stop = null;
    if (!quietly) this.status("closed");
  };

  // A subscription shared by the tabs of an origin (see the top of this file).
  function Shared(url, options) {
    var self = this;
    this.url = url;
    this.options = options;
    this.onMessage = options.onMessage || function () {};
    this.onStatus = options.onStatus || function () {};
    this.onPresence = options.onPresence || function () {};
    this.rosters = Object.create(null);  // center -> its members, as presence items told them
    this.name = "notifier:" + url;
    this.cursor = new Cursor(centersOf(url), options.since);
    this.closed = false;
    this.leading = null;      // the Subscription, while this tab leads
    this.release = null;      // releases the lock, while this tab leads
    this.request = null;      // the pending or granted lock request
    this.state = null;        // the shared connection's "connecting", "connected" or "reconnecting"
    this.transport = null;    // and its transport
    this.reported = null;     // the last status a follower reported
    this.heard = now();       // when the leader was last heard from
    this.pinged = 0;          // when a silent leader was pinged
    this.posted = 0;          // when this tab last posted as leader
    this.stale = STALE + Math.round(Math.random() * TICK);  // so that followers do not all take over at once
    this.behind = options.since !== null && options.since !== undefined;  // catch up before following
    this.catching = null;     // while catching up: what the leader posts meanwhile
    this.catchStop = null;
    this.paused = false;      // frozen, or in the back/forward cache: neither leads nor follows
    this.open();
    this.listen(true);
    this.timer = setInterval(function () { self.tick(); }, TICK);
    this.post({ type: "hello" });
    this.wait(false);
  }

  Shared.prototype.open = function () {
    var self = this;
    this.channel = new BroadcastChannel(this.name);
    this.channel.onmessage = function (event) { self.heed(event.data); };
  };

  // Listens (`on`), or no longer, for the page being frozen or hidden in
  // the back/forward cache, and for its coming back.
  Shared.prototype.listen = function (on) {
    var self = this, method = on ? "addEventListener" : "removeEventListener";
    if (on) {
      this.onPause = function () { self.pause(); };
      this.onResume = function () { self.resume(); };
    }
    if (typeof document !== "undefined" && "onfreeze" in document) {
      document[method]("freeze", this.onPause);
      document[method]("resume", this.onResume);
    }
    if (typeof window !== "undefined" && "onpagehide" in window) {
      window[method]("pagehide", this.onPause);
      window[method]("pageshow", this.onResume);
    }
  };

  Shared.prototype.post = function (data) {
    if (this.closed) return;
    try { this.channel.postMessage(data); } catch (e) { /* closed meanwhile */ }
  };

  Shared.prototype.deliver = function (message) {
    if (!message.event) message.event = "message";
    call(this.onMessage, message.data, message);
  };

  // A presence item: kept in the center's roster (for tabs that join
  // later), and given to the page.
  Shared.prototype.tell = function (item) {
    var roster = this.rosters[item.center] || [];
    if (item.presence === "members") {
      roster = item.members.slice();
    } else {
      roster = roster.filter(function (member) { return member.uid !== item.uid; });
      if (item.presence === "join") roster.push({ uid: item.uid, info: item.info === undefined ? null : item.info });
    }
    this.rosters[item.center] = roster;
    call(this.onPresence, item);
  };

  Shared.prototype.report = function (status, detail) {
    detail.leader = this.leading !== null;
    if (!detail.leader) this.reported = status;
    call(this.onStatus, status, detail);
  };

  // Asks for the lock (at once, with `steal`); this tab leads once it is
  // granted, until it is released or stolen, and then asks again.
  Shared.prototype.wait = function (steal) {
    var self = this, request = { controller: null, granted: false }, options = {};
    if (steal) options.steal = true;
    else if (typeof AbortController !== "undefined") {
      request.controller = new AbortController();
      options.signal = request.controller.signal;
    }
    this.request = request;
    var pending;
    try {
      pending = navigator.locks.request(this.name, options, function () {
        request.granted = true;
        if (self.closed || self.request !== request) return null;  // not wanted any more: release it
        return new Promise(function (resolve) { self.lead(resolve); });
      });
    } catch (e) {
      pending = Promise.reject(e);
    }
    pending.then(over, over);
    function over() {
      if (self.request !== request) return;    // given up for a steal, or paused
      self.request = null;
      if (self.closed) return;
      if (!request.granted) { self.alone(); return; }  // no locks here after all
      if (self.leading) self.follow();         // stolen
      self.wait(false);
    }
  };

  // Where locks are refused (a sandboxed frame): a connection of its own.
  Shared.prototype.alone = function () {
    clearInterval(this.timer);
    this.listen(false);
    try { this.channel.close(); } catch (e) { /* closed already */ }
    this.catching = null;
    if (this.catchStop) this.catchStop();
    if (!this.leading) this.lead(function () {});
  };

  Shared.prototype.steal = function () {
    var previous = this.request;
    this.heard = now();
    this.pinged = 0;
    this.wait(true);
    if (previous && previous.controller) previous.controller.abort();
  };

  Shared.prototype.lead = function (release) {
    var self = this;
    this.release = release;
    this.behind = false;
    if (this.catching) {      // the connection resumes from where the catching up got
      this.catching = null;
      if (this.catchStop) this.catchStop();
    }
    var sink = {
      message: function (message) {
        self.deliver(message);
        self.post({ type: "message", message: message, cursor: self.cursor.value() });
        self.posted = now();
      },
      presence: function (item) {
        self.tell(item);
        self.post({ type: "presence", item: item });
        self.posted = now();
      },
      status: function (status, detail) { self.leaderStatus(status, detail); }
    };
    this.leading = new Subscription(this.url, this.options, this.cursor, sink);
    this.leading.connect();
    this.announce(false);
  };

  // The lock was stolen: another tab leads now.
  Shared.prototype.follow = function () {
    var subscription = this.leading;
    this.leading = null;
    this.release = null;
    this.heard = now();
    this.pinged = 0;
    if (subscription) subscription.close(true);
  };

  // Tells the other tabs where the shared connection stands; `full`: with
  // the members of each center, for a tab that has just joined.
  Shared.prototype.announce = function (full) {
    this.posted = now();
    var state = { type: "state", cursor: this.cursor.value(), status: this.state, transport: this.transport };
    if (full) state.rosters = this.rosters;
    this.post(state);
  };

  Shared.prototype.leaderStatus = function (status, detail) {
    if (status === "closed") {  // refused for good: let the next tab try
      if (this.closed) return;
      this.leading = null;
      this.close();
      return;
    }
    if (STATES.indexOf(status) !== -1) this.state = status;
    this.transport = detail.transport;
    if (status !== "failed") {
      this.post({ type: "status", status: status, detail: copy(detail) });
      this.posted = now();
    }
    this.report(status, detail);
  };

  // The page is frozen or hidden (it may be kept in the back/forward
  // cache): it runs nothing until it resumes, so it asks for no lock, and
  // a leader gives its lock up at once, ends its connection and tells the
  // others where it got, rather than hold the lock while it cannot answer.
  Shared.prototype.pause = function () {
    if (this.closed || this.paused) return;
    var subscription = this.leading, request = this.request;
    this.paused = true;
    clearInterval(this.timer);
    this.catching = null;
    if (this.catchStop) this.catchStop();
    this.request = null;
    if (request && request.controller) request.controller.abort();
    if (subscription) {
      this.leading = null;
      subscription.close(true);
      this.post({ type: "resign", cursor: this.cursor.value() });
    }
    if (this.release) { this.release(); this.release = null; }
    try { this.channel.close(); } catch (e) { /* closed already */ }
  };

  // Back from pause: a follower that first catches up from its cursor on
  // what it missed, or the leader again if no other tab leads.
  Shared.prototype.resume = function () {
    var self = this;
    if (this.closed || !this.paused) return;
    this.paused = false;
    try { this.open(); } catch (e) { this.alone(); return; }
    this.heard = now();
    this.pinged = 0;
    this.behind = this.cursor.value() !== null;
    this.rosters = Object.create(null);  // told again by the leader
    this.timer = setInterval(function () { self.tick(); }, TICK);
    this.post({ type: "hello" });
    this.wait(false);
  };

  // What another tab posted.
  Shared.prototype.heed = function (data) {
    if (this.closed || this.paused || !data || typeof data !== "object") return;
    if (data.type === "hello" || data.type === "ping") {
      if (this.leading) this.announce(data.type === "hello");
      return;
    }
    this.heard = now();
    this.pinged = 0;
    if (this.leading) {
      // Two leaders for a moment (a stolen one that does not know yet):
      // deliver what this tab has not seen; its connection goes on.
      if (data.type === "message" && this.cursor.accept(data.message)) this.deliver(data.message);
      return;
    }
    if (this.behind) { this.behind = false; this.catchUp(); }
    if (this.catching) { this.catching.push(data); return; }
    this.follower(data);
  };

  Shared.prototype.follower = function (data) {
    if (data.type === "message") {
      var fresh = this.cursor.accept(data.message);
      this.cursor.merge(data.cursor);
      if (fresh) this.deliver(data.message);
    } else if (data.type === "presence") {
      this.tell(data.item);
    } else if (data.type === "resign") {   // the next leader resumes from here
      this.cursor.merge(data.cursor);
    } else if (data.type === "status") {
      if (STATES.indexOf(data.status) !== -1) this.state = data.status;
      this.transport = data.detail.transport;
      this.report(data.status, copy(data.detail));
    } else if (data.type === "state") {
      this.cursor.merge(data.cursor);
      this.state = data.status;
      this.transport = data.transport;
      if (data.status && data.status !== this.reported) {
        this.report(data.status, { transport: data.transport });
      }
      for (var center in data.rosters || {}) {   // joined: who is there already
        if (Object.prototype.hasOwnProperty.call(data.rosters, center) && !(center in this.rosters)) this.tell({ presence: "members", center: center, members: data.rosters[center] });
      }
    }
  };

  // A tab given `since` that finds a leader: first the messages after
  // `since` (long-polls answered at once, until one brings nothing), then
  // what the leader posted meanwhile.
  Shared.prototype.catchUp = function () {
    var self = this, done = false;
    var controller = typeof AbortController !== "undefined" ? new AbortController() : null;
    var catching = this.catching = [];
    this.catchStop = function () { done = true; if (controller) controller.abort(); };

    function finish(error) {
      if (done) return;
      done = true;
      self.catching = null;
      self.catchStop = null;
      if (error) self.report("lost", { transport: "longpoll", error: error });
      catching.forEach(function (data) { if (!self.closed && !self.leading) self.follower(data); });
    }

    function poll(token) {
      var url = query(self.url, { since: self.cursor.value(), timeout: 0, token: token });
      fetch(url, { signal: controller ? controller.signal : undefined, cache: "no-store" })
        .then(pollAnswer)
        .then(function (body) {
          if (done || self.closed) return;
          if (body.recovered === false) {
            self.report("lost", body.lost && body.lost.length ? { transport: "longpoll", centers: body.lost }
                                                              : { transport: "longpoll" });
          }
          var messages = body.messages || [];
          messages.forEach(function (message) {
            if (!message.center && self.cursor.centers.length === 1) message.center = self.cursor.centers[0];
            if (self.cursor.accept(message)) self.deliver(message);
          });
          if (body.last_id) self.cursor.merge(body.last_id);
          if (messages.length) poll(token);
          else finish();
        })
        .catch(function (error) { finish(String(error && error.message || error)); });
    }

    obtainToken(this.options.token, poll, function (error) {
      finish(String(error && error.message || error));
    });
  };

  Shared.prototype.tick = function () {
    if (this.closed) return;
    var time = now();
    if (this.leading) {
      if (time - this.posted >= HEARTBEAT) this.announce(false);
      return;
    }
    if (time - this.heard < this.stale) return;
    if (!this.pinged) {
      this.pinged = time;     // a leader whose timers are throttled still answers
      this.post({ type: "ping" });
    } else if (time - this.pinged >= PING_WAIT) {
      this.steal();           // frozen or hung: take over
    }
  };

  Shared.prototype.close = function () {
    if (this.closed) return;
    var subscription = this.leading;
    this.closed = true;
    this.leading = null;
    clearInterval(this.timer);
    this.listen(false);
    if (subscription) subscription.close(true);
    if (this.catchStop) this.catchStop();
    this.catching = null;
    if (this.release) { this.release(); this.release = null; }
    if (this.request && this.request.controller) this.request.controller.abort();
    try { this.channel.close(); } catch (e) { /* closed already */ }
    this.report("closed", { transport: this.transport });
  };

  function sharable() {
    return typeof BroadcastChannel !== "undefined" && typeof navigator !== "undefined" &&
      !!navigator.locks && typeof navigator.locks.request === "function" && typeof Promise !== "undefined";
  }

  var Notifier = {
    subscribe: function (url, options) {
      options = options || {};
      url = url.replace(/^ws/, "http");
      var shared = options.shared === undefined ? sharable() : !!options.shared && sharable();
      var tab = null;
      if (shared) {
        try { tab = new Shared(url, options); } catch (e) { tab = null; /* no channel here: unshared */ }
      }
      if (tab) {
        return {
          close: function () { tab.close(); },
          get lastId() { return tab.cursor.value(); },
          get transport() {
            var leading = tab.leading;
            return leading ? leading.transports[leading.index] : tab.transport;
          },
          get leader() { return tab.leading !== null; }
        };
      }
      var onMessage = options.onMessage || function () {};
      var onStatus = options.onStatus || function () {};
      var onPresence = options.onPresence || function () {};
      var subscription = new Subscription(url, options, new Cursor(centersOf(url), options.since), {
        message: function (message) { call(onMessage, message.data, message); },
        presence: function (item) { call(onPresence, item); },
        status: function (status, detail) { call(onStatus, status, detail); }
      });
      subscription.connect();
      return {
        close: function () { subscription.close(); },
        get lastId() { return subscription.cursor.value(); },
        get transport() { return subscription.transports[subscription.index]; },
        get leader() { return true; }
      };
    }
  };

  if (typeof module === "object" && module.exports) module.exports = Notifier;
  else root.Notifier = Notifier;
})(typeof self !== "undefined" ? self : this);
