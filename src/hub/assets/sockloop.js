/*! sockloop.js: the browser client of sockloop hubs (docs/PROTOCOL.md, "Sessions" and
 * "Long-polling transport"). No build step, no dependencies.
 *
 *   <script src="/sockloop.js"></script>        classic script: window.sockloop
 *   import { connect } from "/sockloop.mjs";     ES module (the same source, with exports)
 *
 *   const hub = sockloop.connect("/ws?nick=ann");
 *   hub.on("chat:message", (data, env) => { ... });
 *   hub.on("connect", (s) => { ... });           connect, disconnect, reconnecting, resumed,
 *                                                not_recovered, gave_up (reserved names)
 *   hub.emit("chat:say", { room: "lobby", text: "hi" });
 *   const answer = await hub.emitWithAck("room:list", {}, 5000);
 *
 * Mirrors the Rust HubClient (src/client/hub.rs): transports tried in order at every
 * (re)connect (WebSocket, then HTTP long-polling); a session resumed after a cut, all or
 * nothing (the server replays what this client did not receive, the client resends what
 * the server did not count); reconnection with exponential backoff and full jitter; a
 * bounded offline buffer with a policy; and the browser's online/offline events (back
 * online: reconnect at once; offline: no attempts until online again). On long-polling it
 * tries WebSocket now and then and moves the session over (a resume) when one gets through.
 */
"use strict";
const sockloop = (() => {
  /** Every option and its default. */
  const DEFAULTS = Object.freeze({
    transports: ["websocket", "polling"], // tried in order at every (re)connect
    backoff: Object.freeze({ min: 100, max: 10000, factor: 2 }), // ms; full jitter
    maxAttempts: Infinity,      // reconnect attempts after a loss before giving up
    offlineLimit: 1024,         // messages queued and not yet written
    offlinePolicy: "drop-oldest", // or "drop-newest", "error"
    sessions: true,             // ask the hub for a session (resume after a cut)
    welcomeTimeout: 10000,      // ms for the server's session:welcome
    connectTimeout: 10000,      // ms for a WebSocket to open / a handshake to answer
    requestTimeout: 10000,      // ms for a long-polling POST (a GET: plus the poll interval)
    retryFor: 30000,            // ms a long-polling request is retried before the link fails
    ackTimeout: 5000,           // default timeout of emitWithAck
    autoAck: true,              // acknowledge server events that carry an id
    upgradeDelay: 3000,         // ms on long-polling before trying WebSocket again (then
                                // backing off to 5 min while it fails); 0: never
  });
  const STATE_EVENTS = new Set(["connect", "disconnect", "reconnecting", "resumed", "not_recovered", "gave_up"]);
  const ACK_EVERY = 64;   // acknowledge at least every this many data messages
  const ASK_EVERY = 50;   // ms between asks while some sent messages are unconfirmed
  const QUIET = 5;        // ms of quiet before acknowledging what came
  const RETRY_PAUSE = 50; // ms before a failed long-polling request is made again
  const MAX_TIMER = 2 ** 31 - 1; // the longest delay setTimeout takes

  const num = (v, dflt, lo) => (typeof v === "number" && !Number.isNaN(v) && v >= lo ? v : dflt);

  /** The backoff options, sanitized: finite numbers, max >= min. */
  function backoffOptions(b) {
    b = b || {};
    const min = Math.min(num(b.min, DEFAULTS.backoff.min, 0), MAX_TIMER);
    const max = Math.max(min, Math.min(num(b.max, DEFAULTS.backoff.max, 0), MAX_TIMER));
    const factor = Math.min(num(b.factor, DEFAULTS.backoff.factor, 0), 2 ** 20);
    return { min, max, factor };
  }

  /** The upper bound (ms) of the delay before attempt `attempt` (0-based):
   * min(max, min × factor^attempt); a zero min grows from 1 ms; factor <= 1 stays at min. */
  function backoffCap(b, attempt) {
    const { min, max, factor } = backoffOptions(b);
    if (factor <= 1) return min;
    const n = Math.max(0, Math.floor(num(attempt, 0, 0)));
    const grown = Math.max(min, 1) * Math.pow(factor, n); // Infinity past 2^1024: capped
    return Number.isFinite(grown) ? Math.min(max, grown) : max;
  }

  /** The delay (whole ms) before attempt `attempt`: uniform in [min, cap(attempt)]. */
  function backoffDelay(b, attempt, random = Math.random()) {
    const lo = backoffOptions(b).min;
    const hi = backoffCap(b, attempt);
    if (!(hi > lo)) return lo;
    const r = num(random, 0, 0) % 1;
    return Math.min(hi, lo + Math.floor(r * (hi - lo + 1)));
  }

  function withQuery(url, query) {
    if (!query) return url;
    return url + (url.includes("?") ? "&" : "?") + query;
  }

  function resolve(url, scheme) {
    const base = typeof location !== "undefined" ? location.href : "http://localhost/";
    const u = new URL(url, base);
    const secure = u.protocol === "https:" || u.protocol === "wss:";
    u.protocol = scheme === "ws" ? (secure ? "wss:" : "ws:") : (secure ? "https:" : "http:");
    return u;
  }

  /** A WebSocket link. Calls h.open(), h.message(text), h.closed(reason) (once). */
  class WsLink {
    constructor(url, opts, h) {
      this.name = "websocket";
      this.h = h;
      this.done = false;
      this.opened = false;
      try {
        this.ws = new WebSocket(resolve(url, "ws").href);
      } catch (e) {
        setTimeout(() => this.end("websocket: " + e.message), 0);
        return;
      }
      this.timer = setTimeout(() => this.end("websocket: open timed out"), opts.connectTimeout);
      this.ws.onopen = () => { clearTimeout(this.timer); this.opened = true; if (!this.done) h.open(); };
      this.ws.onmessage = (e) => { if (!this.done && typeof e.data === "string") h.message(e.data); };
      this.ws.onclose = (e) => this.end(`closed (${e.code}${e.reason ? ": " + e.reason : ""})`, e.code);
      this.ws.onerror = () => {};
    }
    send(text) {
      if (this.done || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(text);
      return true;
    }
    end(reason, code) {
      if (this.done) return;
      this.done = true;
      clearTimeout(this.timer);
      if (this.ws) { this.ws.onclose = this.ws.onmessage = this.ws.onopen = null; try { this.ws.close(); } catch {} }
      this.h.closed(reason, code);
    }
    close() { if (!this.done) { this.done = true; clearTimeout(this.timer); try { this.ws.close(1000, "bye"); } catch {} } }
  }

  const enc = new TextEncoder();
  const dec = new TextDecoder();

  /** Parses a batch (`FIRST\n` then records `TYPE LEN ":" PAYLOAD`): [first, [[type, bytes]]];
   * null when malformed. */
  function parseBatch(buf) {
    let i = buf.indexOf(10);
    if (i < 1) return null;
    const first = Number(dec.decode(buf.subarray(0, i)));
    if (!Number.isSafeInteger(first)) return null;
    const recs = [];
    i += 1;
    while (i < buf.length) {
      const type = String.fromCharCode(buf[i]);
      let j = i + 1, len = 0;
      while (j < buf.length && buf[j] >= 48 && buf[j] <= 57) { len = len * 10 + buf[j] - 48; j++; }
      if (j === i + 1 || buf[j] !== 58 || j + 1 + len > buf.length) return null;
      recs.push([type, buf.subarray(j + 1, j + 1 + len)]);
      i = j + 1 + len;
    }
    return [first, recs];
  }

  function record(type, bytes) {
    const head = enc.encode(type + bytes.length + ":");
    const out = new Uint8Array(head.length + bytes.length);
    out.set(head); out.set(bytes, head.length);
    return out;
  }

  function concat(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  /** An HTTP long-polling link: one held GET carrying the cumulative ack, one POST of records
   * at a time numbered by `seq`; a request that fails is made again (same ack, same seq) for
   * up to `retryFor`, so a lost response loses and duplicates nothing. */
  class PollLink {
    constructor(url, opts, h) {
      this.name = "polling";
      this.opts = opts;
      this.h = h;
      this.done = false;
      this.ack = 0;       // last record received whole
      this.seq = 0;       // last POST batch numbered
      this.queue = [];    // records waiting for a POST
      this.posting = false;
      this.aborts = new Set();
      this.paused = null; // while a WebSocket is tried: {promise, resume}
      const u = resolve(url, "http");
      this.base = u.origin + u.pathname;
      u.searchParams.set("transport", "polling");
      this.handshake(u.href);
    }
    async request(url, init, timeout) {
      const ctl = new AbortController();
      ctl.isGet = init.method === "GET";
      this.aborts.add(ctl);
      const timer = setTimeout(() => ctl.abort(), timeout);
      try {
        const r = await fetch(url, { cache: "no-store", credentials: "same-origin", ...init, signal: ctl.signal });
        const body = new Uint8Array(await r.arrayBuffer());
        return { status: r.status, body };
      } finally {
        clearTimeout(timer);
        this.aborts.delete(ctl);
      }
    }
    async handshake(url) {
      let r;
      try {
        r = await this.request(url, { method: "GET" }, this.opts.connectTimeout);
      } catch (e) {
        return this.end("polling: handshake failed: " + e.message);
      }
      if (this.done) return;
      if (r.status !== 200) return this.end(`polling: refused (${r.status}: ${dec.decode(r.body)})`);
      let hs;
      try { hs = JSON.parse(dec.decode(r.body)); } catch { hs = null; }
      if (!hs || typeof hs.sid !== "string") return this.end("polling: bad handshake");
      this.sid = hs.sid;
      this.pollInterval = num(hs.pingInterval, 25000, 0);
      this.h.open();
      this.poll();
    }
    url(extra) { return `${this.base}?transport=polling&sid=${encodeURIComponent(this.sid)}&${extra}`; }
    async poll() {
      let failing = null;
      while (!this.done) {
        let r;
        try {
          r = await this.request(this.url("ack=" + this.ack), { method: "GET" },
            this.pollInterval + this.opts.requestTimeout);
        } catch (e) {
          r = null;
        }
        if (this.done) return;
        if (this.paused) {
          // Whatever came is dropped unread: the ack stays, so it comes again.
          await this.paused.promise;
          continue;
        }
        const handed = r && r.status === 200 ? this.batch(r.body) : null;
        if (handed === false) return;
        if (handed) { failing = null; continue; }
        if (r && r.status === 400) return this.end("polling: session ended (400)", 1006);
        failing = failing || Date.now();
        if (Date.now() - failing > this.opts.retryFor) return this.end("polling: GET kept failing", 1006);
        await new Promise((res) => setTimeout(res, RETRY_PAUSE));
      }
    }
    /** Hands over the records after `ack`; false when the link ended, null when the body is
     * not a batch (nothing was handed over: the caller asks again with the same ack). */
    batch(body) {
      const b = parseBatch(body);
      if (!b) return null; // a body cut short (Chromium may hand one over): asked for again
      let [n, recs] = b;
      for (const [type, bytes] of recs) {
        const seq = n++;
        if (seq <= this.ack) continue; // already had it: a response sent again
        if (seq !== this.ack + 1) { this.end("polling: records skipped", 1002); return false; }
        this.ack = seq;
        if (type === "t") this.h.message(dec.decode(bytes));
        else if (type === "c") {
          const code = bytes.length >= 2 ? (bytes[0] << 8) | bytes[1] : 1005;
          const reason = dec.decode(bytes.subarray(2));
          // Confirm the close, best effort, then end.
          this.request(this.url("ack=" + this.ack), { method: "GET" }, 1000).catch(() => {});
          this.end(`closed (${code}${reason ? ": " + reason : ""})`, code);
          return false;
        }
        if (this.done) return false;
      }
      return true;
    }
    send(text) {
      if (this.done || !this.sid) return false;
      this.queue.push(record("t", enc.encode(text)));
      if (!this.posting) this.post();
      return true;
    }
    async post() {
      this.posting = true;
      while (!this.done && this.queue.length) {
        const body = concat(this.queue.splice(0));
        const url = this.url("seq=" + ++this.seq);
        const since = Date.now();
        for (;;) {
          let r;
          try {
            r = await this.request(url, { method: "POST", body, headers: { "Content-Type": "application/octet-stream" } },
              this.opts.requestTimeout);
          } catch (e) {
            r = null;
          }
          if (this.done) return;
          if (r && r.status === 200) break;
          if (r && r.status !== 409) { this.posting = false; return this.end(`polling: POST refused (${r.status})`, 1006); }
          if (Date.now() - since > this.opts.retryFor) { this.posting = false; return this.end("polling: POST kept failing", 1006); }
          await new Promise((res) => setTimeout(res, RETRY_PAUSE));
        }
      }
      this.posting = false;
    }
    /** Stops reading (the held GET is dropped; nothing more is handed over) until
     * unpause(): the client tries a WebSocket meanwhile. */
    pause() {
      if (this.paused || this.done) return;
      let resume;
      const promise = new Promise((res) => { resume = res; });
      this.paused = { promise, resume };
      for (const c of this.aborts) if (c.isGet) c.abort();
    }
    unpause() {
      const p = this.paused;
      this.paused = null;
      if (p) p.resume();
    }
    end(reason, code) {
      if (this.done) return;
      this.done = true;
      for (const c of this.aborts) c.abort();
      this.unpause();
      this.h.closed(reason, code);
    }
    /** Ends without a close record: the session went on over another connection. */
    drop() {
      if (this.done) return;
      this.done = true;
      for (const c of this.aborts) c.abort();
      this.unpause();
    }
    close() {
      if (this.done) return;
      this.done = true;
      for (const c of this.aborts) c.abort();
      this.unpause();
      if (this.sid) {
        const body = record("c", new Uint8Array([0x03, 0xe8]));
        fetch(this.url("seq=" + ++this.seq), { method: "POST", body, keepalive: true }).catch(() => {});
      }
    }
  }

  const LINKS = { websocket: WsLink, polling: PollLink };

  function fail(code, message) {
    const e = new Error(message || code);
    e.code = code;
    return e;
  }

  /** A hub client: see the header of this file. Create with `sockloop.connect`. */
  class Client {
    constructor(url, options) {
      const o = { ...DEFAULTS, ...(options || {}) };
      o.backoff = backoffOptions(o.backoff);
      o.transports = (o.transports || []).filter((t) => LINKS[t]);
      if (!o.transports.length) throw fail("config", "no known transport (websocket, polling)");
      this.url = url;
      this.opts = o;
      this.listeners = new Map();
      this.pending = [];      // the offline buffer: {text, id}
      this.waiters = new Map(); // id -> {resolve, reject, timer}
      this.nextId = 1;
      this.link = null;
      this.ready = false;     // the link is welcomed: data may go
      this.closed = false;
      this.transport = null;
      this.attempt = 0;
      this.timer = null;
      this.seen = [];         // recent server ack ids (dedup of retries without a session)
      this.resetSession();
      this.onOnline = () => { if (!this.closed && !this.link) { clearTimeout(this.timer); this.timer = null; this.open(); } };
      this.onOffline = () => { if (!this.link) { clearTimeout(this.timer); this.timer = null; } };
      if (typeof addEventListener === "function") {
        addEventListener("online", this.onOnline);
        addEventListener("offline", this.onOffline);
      }
      this.open();
    }

    resetSession() {
      this.sid = null; this.token = "";
      this.received = 0; this.told = 0; this.sent = 0;
      this.unacked = []; // [n, {text, id}]
    }

    /** Listens to a server event, or a connection-state event (reserved names). */
    on(event, fn) {
      if (!this.listeners.has(event)) this.listeners.set(event, new Set());
      this.listeners.get(event).add(fn);
      return this;
    }
    /** Stops listening. */
    off(event, fn) { const s = this.listeners.get(event); if (s) s.delete(fn); return this; }
    fire(event, ...args) {
      const s = this.listeners.get(event);
      if (!s) return;
      for (const fn of [...s]) {
        try { fn(...args); } catch (e) { setTimeout(() => { throw e; }, 0); }
      }
    }

    /** Whether a connection is up and welcomed. */
    get connected() { return this.ready; }
    /** The session id, while there is a session. */
    get sessionId() { return this.sid; }
    /** Messages queued and not yet written (the offline buffer). */
    get buffered() { return this.pending.length; }

    /** Queues {event, data} (written at once when connected). Throws code "full" past the
     * offline limit with the "error" policy, "closed" after close(). */
    emit(event, data) {
      this.queue({ text: JSON.stringify({ event, data }), id: null });
    }

    /** Acknowledges a server event that carried an id (with autoAck off). */
    ack(id, data) {
      this.queue({ text: JSON.stringify({ event: "ack", ref: id, data }), id: null });
    }

    /** Sends {event, data, id}; resolves with the data of the server's ack (or reply),
     * rejects with an Error whose code is the server's error code, or "timeout", "dropped",
     * "not_recovered", "closed", "full". With a session the request survives reconnects. */
    emitWithAck(event, data, timeout = this.opts.ackTimeout) {
      return new Promise((resolve, reject) => {
        const id = this.nextId++;
        const w = { resolve, reject, timer: null };
        this.waiters.set(id, w);
        const t = num(timeout, this.opts.ackTimeout, 0);
        if (Number.isFinite(t)) w.timer = setTimeout(() => this.answer(id, fail("timeout", "timed out")), Math.min(t, MAX_TIMER));
        try {
          this.queue({ text: JSON.stringify({ event, data, id }), id });
        } catch (e) {
          this.answer(id, e);
        }
      });
    }

    answer(id, err, value) {
      const w = this.waiters.get(id);
      if (!w) return;
      this.waiters.delete(id);
      clearTimeout(w.timer);
      if (err) w.reject(err); else w.resolve(value);
    }

    queue(out) {
      if (this.closed) throw fail("closed", "client closed");
      if (this.pending.length >= Math.max(1, this.opts.offlineLimit)) {
        if (this.opts.offlinePolicy === "error") throw fail("full", "offline buffer full");
        if (this.opts.offlinePolicy === "drop-newest") { this.dropped(out); return; }
        this.dropped(this.pending.shift());
      }
      this.pending.push(out);
      this.flush();
    }
    dropped(out) { if (out && out.id != null) this.answer(out.id, fail("dropped", "dropped from the offline buffer")); }

    /** Writes the offline buffer, oldest first; with a session each is kept until confirmed. */
    flush() {
      while (this.ready && this.link && this.pending.length) {
        const out = this.pending.shift();
        const ok = this.link.send(out.text);
        if (this.opts.sessions && this.sid) {
          // Sent or not, it is numbered now: the resume decides whether it went.
          this.unacked.push([++this.sent, out]);
          this.askLater();
        } else if (!ok) {
          this.pending.unshift(out);
          return;
        }
        if (!ok) return;
      }
    }

    control(n) {
      if (this.link && this.ready) this.link.send(JSON.stringify({ event: "session:ack", data: n }));
    }

    /** Opens a link over the first transport that works (in order), then waits for the welcome. */
    open(index = 0) {
      if (this.closed) return;
      const name = this.opts.transports[index];
      const query = !this.opts.sessions ? "" : this.sid
        ? `sl_sid=${encodeURIComponent(this.sid)}&sl_token=${encodeURIComponent(this.token)}&sl_seq=${this.received}`
        : "sl_session=1";
      const url = withQuery(typeof this.url === "function" ? this.url() : this.url, query);
      let opened = false, welcomeTimer = null;
      const link = new LINKS[name](url, this.opts, {
        open: () => {
          opened = true;
          if (link !== this.link) return;
          this.transport = name;
          if (!this.opts.sessions) return this.welcomed(null);
          welcomeTimer = setTimeout(() => link.end("no welcome in time"), this.opts.welcomeTimeout);
        },
        message: (text) => {
          if (link !== this.link) return;
          if (!this.ready) {
            let env;
            try { env = JSON.parse(text); } catch { return; }
            if (!env || typeof env !== "object") return;
            if (env.event === "session:welcome" || env.event === "session:resumed") {
              clearTimeout(welcomeTimer); this.welcomed(env.data || {});
            } else if (env.event === "session:refused") {
              clearTimeout(welcomeTimer); this.opts.sessions = false; this.welcomed(null, env.data && env.data.reason);
            }
            return;
          }
          this.incoming(text);
        },
        closed: (reason) => {
          clearTimeout(welcomeTimer);
          if (link !== this.link) return;
          this.link = null;
          if (!opened && index + 1 < this.opts.transports.length) return this.open(index + 1);
          this.lost(reason);
        },
      });
      this.link = link;
    }

    /** The welcome: resume (resend what the server did not count) or a fresh session. */
    welcomed(w, refused) {
      const had = this.sid !== null;
      let ev, data;
      if (!w) {
        ev = "connect"; data = { session: null, transport: this.transport, refused: refused || undefined };
      } else if (w.recovered && had && w.sid === this.sid && w.seq === this.received && w.cseq <= this.sent) {
        this.confirm(w.cseq);
        this.ready = true;
        const resend = this.unacked.map(([, out]) => out);
        for (const out of resend) this.link.send(out.text);
        ev = "resumed"; data = { replayed: w.replayed || 0, resent: resend.length, transport: this.transport };
      } else {
        const unconfirmed = this.unacked.map(([, out]) => out);
        this.resetSession();
        this.sid = String(w.sid); this.token = String(w.token || "");
        this.received = this.told = num(w.seq, 0, 0);
        this.sent = num(w.cseq, 0, 0);
        for (const out of unconfirmed) if (out.id != null) this.answer(out.id, fail("not_recovered", "session lost before confirmation"));
        if (had || w.recovered) {
          ev = "not_recovered"; data = { reason: w.recovered ? "mismatch" : (w.reason || "unknown"), unconfirmed: unconfirmed.length, session: this.sid, transport: this.transport };
        } else {
          ev = "connect"; data = { session: this.sid, transport: this.transport };
        }
      }
      this.ready = true;
      this.attempt = 0;
      this.fire(ev, data);
      this.flush();
      this.askLater();
      this.probeLater();
    }

    /** On long-polling with WebSocket earlier in the list: try it later (a session only:
     * the WebSocket resumes it, the server closes the long-polling side). */
    probeLater() {
      const ws = this.opts.transports.indexOf("websocket");
      const on = this.opts.transports.indexOf(this.transport);
      if (this.probeTimer || !this.sid || !(this.opts.upgradeDelay > 0) || ws < 0 || ws > on) return;
      const b = { min: this.opts.upgradeDelay, max: Math.max(this.opts.upgradeDelay, 300000), factor: 2 };
      const delay = backoffDelay(b, this.probes || 0);
      this.probeTimer = setTimeout(() => { this.probeTimer = null; this.probe(); }, delay);
    }

    /** Tries a WebSocket while on long-polling: reading pauses (nothing more is counted),
     * the WebSocket resumes the session from the count so far; on its welcome it takes over,
     * and if it fails first, long-polling goes on where it stopped. */
    probe() {
      const old = this.link;
      if (this.closed || !this.ready || !old || old.name !== "polling" || !this.sid) return;
      old.pause();
      this.ready = false;
      const query = `sl_sid=${encodeURIComponent(this.sid)}&sl_token=${encodeURIComponent(this.token)}&sl_seq=${this.received}`;
      const url = withQuery(typeof this.url === "function" ? this.url() : this.url, query);
      let opened = false, welcomeTimer = null, settled = false;
      const back = () => { // the WebSocket failed before it opened: nothing changed
        settled = true;
        this.probing = null;
        this.probes = Math.min((this.probes || 0) + 1, 64);
        if (this.link !== old) return;
        old.unpause();
        this.ready = true;
        this.flush();
        this.askLater();
        this.probeLater();
      };
      const opts = { ...this.opts, connectTimeout: Math.min(this.opts.connectTimeout, 5000) };
      const ws = new WsLink(url, opts, {
        open: () => {
          opened = true;
          welcomeTimer = setTimeout(() => ws.end("no welcome in time"), this.opts.welcomeTimeout);
        },
        message: (text) => {
          if (settled) { if (this.link === ws) this.incoming(text); return; }
          let env;
          try { env = JSON.parse(text); } catch { return; }
          if (!env || (env.event !== "session:welcome" && env.event !== "session:resumed")) return;
          clearTimeout(welcomeTimer);
          settled = true;
          this.probing = null;
          if (this.link !== old) return ws.close(); // lost meanwhile: the reconnect resumes
          this.probes = 0;
          this.link = ws;
          old.drop();
          this.transport = "websocket";
          this.welcomed(env.data || {});
        },
        closed: (reason) => {
          clearTimeout(welcomeTimer);
          if (!settled && !opened) return back();
          if (!settled) {
            // It opened, so the server may have moved the session to it: start over from
            // the counts (a resume on a new connection decides).
            settled = true;
            this.probing = null;
            if (this.link !== old) return;
            this.link = null;
            old.drop();
            return this.lost(reason);
          }
          if (this.link !== ws) return;
          this.link = null;
          this.lost(reason);
        },
      });
      this.probing = ws;
    }

    confirm(upto) {
      while (this.unacked.length && this.unacked[0][0] <= upto) this.unacked.shift();
    }

    incoming(text) {
      let env;
      try { env = JSON.parse(text); } catch { env = null; }
      const data = env && typeof env === "object" && typeof env.event === "string";
      if (data && env.event.startsWith("session:")) {
        if (env.event === "session:ack") this.confirm(num(env.data, 0, 0));
        return;
      }
      if (this.opts.sessions && this.sid) {
        // Every data message counts, even one this page cannot read: the server counted it.
        this.received++;
        if (this.received - this.told >= ACK_EVERY) { this.told = this.received; this.control(this.received); }
        this.ackSoon();
      }
      if (data) this.deliver(env);
    }

    /** An answer goes to its emitWithAck; anything else to the listeners. */
    deliver(env) {
      if (env.ref != null && this.waiters.has(env.ref)) {
        const d = env.data === undefined ? null : env.data;
        if (env.event === "error") this.answer(env.ref, fail(String((d && d.code) || "error"), (d && d.message) || ""));
        else this.answer(env.ref, null, d);
        return;
      }
      if (env.event === "ack") return;
      if (env.id != null && this.opts.autoAck) {
        this.ack(env.id);
        if (this.seen.includes(env.id)) return; // a retry of one already handled
        this.seen.push(env.id);
        if (this.seen.length > 256) this.seen.shift();
      }
      this.fire(env.event, env.data === undefined ? null : env.data, env);
    }

    /** Acknowledges what came once the connection is quiet for a moment. */
    ackSoon() {
      if (this.ackTimer) return;
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        if (this.received > this.told) { this.told = this.received; this.control(this.received); }
      }, QUIET);
    }

    /** While some sent messages are unconfirmed, asks the server every ASK_EVERY ms. */
    askLater() {
      if (this.askTimer || !this.unacked.length) return;
      this.askTimer = setTimeout(() => {
        this.askTimer = null;
        if (!this.ready || !this.unacked.length) return;
        this.control(this.received);
        this.told = Math.max(this.told, this.received);
        this.askLater();
      }, ASK_EVERY);
    }

    /** The link broke: say so, then reconnect with backoff (not while offline). */
    lost(reason) {
      const was = this.ready;
      this.ready = false;
      clearTimeout(this.probeTimer); this.probeTimer = null;
      if (this.closed) return;
      if (was) this.fire("disconnect", { reason });
      this.schedule();
    }

    schedule() {
      if (this.closed || this.link || this.timer) return;
      if (this.attempt >= this.opts.maxAttempts) return this.giveUp();
      if (typeof navigator !== "undefined" && navigator.onLine === false) return; // "online" resumes
      const delay = backoffDelay(this.opts.backoff, this.attempt);
      this.attempt = Math.min(this.attempt + 1, Number.MAX_SAFE_INTEGER);
      this.fire("reconnecting", { attempt: this.attempt, delay });
      this.timer = setTimeout(() => { this.timer = null; this.open(); }, delay);
    }

    giveUp() {
      this.fire("gave_up", {});
      this.shutdown();
    }

    shutdown() {
      this.closed = true;
      this.ready = false;
      clearTimeout(this.timer); clearTimeout(this.ackTimer); clearTimeout(this.askTimer);
      clearTimeout(this.probeTimer);
      if (this.probing) { this.probing.close(); this.probing = null; }
      if (typeof removeEventListener === "function") {
        removeEventListener("online", this.onOnline);
        removeEventListener("offline", this.onOffline);
      }
      for (const id of [...this.waiters.keys()]) this.answer(id, fail("closed", "client closed"));
      for (const out of this.pending) this.dropped(out);
    }

    /** Writes what is queued (best effort), closes the connection, stops reconnecting. */
    close() {
      if (this.closed) return;
      this.flush();
      const link = this.link;
      this.link = null;
      if (link) link.close();
      this.shutdown();
    }
  }

  /** Connects to the hub at `url` (`/ws?nick=ann`, `ws://…`, `http://…`; or a function
   * returning one, called at every attempt). */
  function connect(url, options) { return new Client(url, options); }

  return Object.freeze({ connect, Client, backoffCap, backoffDelay, DEFAULTS, parseBatch });
})();
globalThis.sockloop = sockloop; // sockloop:classic (the ES module variant exports instead)
