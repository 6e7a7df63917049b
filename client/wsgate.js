// wsgate-client: the JavaScript client of the wsgate gateway protocol (DESIGN §6, §11, §12, §14).
// One ES module, no dependencies, no build step. Runs in browsers and in Node >= 22 (global
// WebSocket); nothing here touches a WebSocket, a timer or the network at import time.

const TOPIC_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** Defaults of every tunable option (milliseconds unless said otherwise). */
export const DEFAULTS = Object.freeze({
  minDelay: 250, // first backoff envelope
  maxDelay: 10_000, // backoff cap
  stableAfter: 60_000, // a connection open this long resets the backoff
  drainDelay: 1_000, // after close 1001 / 1008 "token expired": reconnect within [0, drainDelay)
  maxQueue: 1_000, // calls kept while not open
  helloTimeout: 15_000, // from the start of an attempt to `hello`
  refreshAt: 0.8, // fraction of the token's lifetime at which `auth <jwt>` is sent
  sessionPath: "/ws-session",
  healthPath: "/ws-health",
});

/** Errors the client raises: `code` says what happened (see README "Errors"). */
export class WsgateError extends Error {
  constructor(code, message, extra) {
    super(message);
    this.name = "WsgateError";
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

/**
 * Full-jitter exponential backoff: a delay drawn uniformly from
 * [0, min(maxDelay, minDelay * 2^attempt)).
 */
export function backoffDelay(attempt, random = Math.random, minDelay = DEFAULTS.minDelay, maxDelay = DEFAULTS.maxDelay) {
  const envelope = Math.min(maxDelay, minDelay * 2 ** Math.min(Math.max(attempt, 0), 40));
  return Math.floor(random() * envelope);
}

/** The payload (claims) of a JWT, or null when it is not one. Not verified: only read. */
export function decodeJwt(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** Whether `topic` is a valid topic name: 1–128 bytes of [A-Za-z0-9._:-]. */
export function isValidTopic(topic) {
  return typeof topic === "string" && TOPIC_RE.test(topic);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** `header\n` followed by the payload bytes: the binary form of a command. */
function binaryFrame(header, bytes) {
  const head = encoder.encode(header + "\n");
  const out = new Uint8Array(head.length + bytes.length);
  out.set(head, 0);
  out.set(bytes, head.length);
  return out;
}

/** Splits off the first space-separated word: [word, rest-or-null]. */
function word(s) {
  const i = s.indexOf(" ");
  return i < 0 ? [s, null] : [s.slice(0, i), s.slice(i + 1)];
}

function parseSeq(s) {
  if (!/^\d{1,16}$/.test(s ?? "")) return NaN;
  return Number(s);
}

function member(tok) {
  const i = tok.indexOf(":");
  return i < 0 ? { peer: tok } : { peer: tok.slice(0, i), user: tok.slice(i + 1) };
}

function inBrowser() {
  return typeof document !== "undefined" || typeof globalThis.WorkerGlobalScope !== "undefined";
}

function noop() {}

/** A promise that never reports an unhandled rejection (callers may still await it). */
function quietDeferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(noop);
  let settled = false;
  return {
    promise,
    get settled() {
      return settled;
    },
    resolve(v) {
      if (!settled) {
        settled = true;
        resolve(v);
      }
    },
    reject(e) {
      if (!settled) {
        settled = true;
        reject(e);
      }
    },
  };
}

/** What `subscribe` returns. */
class Subscription {
  constructor(gw, topic, onMessage, opts) {
    this._gw = gw;
    this.topic = topic;
    this._onMessage = onMessage;
    this._onGap = opts.onGap;
    this._onJoin = opts.onJoin;
    this._onLeave = opts.onLeave;
    this._onError = opts.onError;
    this._ready = quietDeferred();
    this.active = true;
  }

  /** Resolves with the topic's seq when the gateway confirmed the subscription (`ok sub`). */
  get ready() {
    return this._ready.promise;
  }

  unsubscribe() {
    this._gw._unsubscribe(this);
  }
}

class Gateway {
  constructor(url, opts = {}) {
    this._opts = opts;
    this._cfg = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS)) if (opts[k] !== undefined) this._cfg[k] = opts[k];

    // Injectable platform (called as plain functions: native ones must not get `this`).
    this._random = opts.random ?? Math.random;
    this._now = opts.now ?? (() => Date.now());
    this._setTimeout = opts.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this._clearTimeout = opts.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
    this._fetch = opts.fetch ?? (typeof globalThis.fetch === "function" ? (...a) => globalThis.fetch(...a) : null);

    this._url = Gateway._normalizeUrl(url);
    const browser = inBrowser();
    this._cookieMode = opts.cookies ?? (browser ? "browser" : "jar");
    if (this._cookieMode !== "browser" && this._cookieMode !== "jar") {
      throw new TypeError(`wsgate: cookies must be "browser" or "jar", not ${JSON.stringify(opts.cookies)}`);
    }
    this._jar = this._cookieMode === "jar" ? new Map() : null;
    this._tokenIn = opts.tokenIn ?? (this._cookieMode === "jar" ? "header" : "query");
    if (this._tokenIn !== "query" && this._tokenIn !== "header") throw new TypeError('wsgate: tokenIn must be "query" or "header"');
    if (this._tokenIn === "header" && browser && !opts.WebSocket) {
      throw new TypeError('wsgate: a browser WebSocket cannot send headers: use tokenIn "query"');
    }
    this._sessionUrl = opts.sessionUrl ?? Gateway._httpUrl(this._url, this._cfg.sessionPath);
    this._healthUrl = opts.healthUrl ?? Gateway._httpUrl(this._url, this._cfg.healthPath);
    if (opts.probe === false) this._probe = null;
    else if (typeof opts.probe === "function") this._probe = opts.probe;
    else this._probe = this._fetch ? (ctx) => this._healthProbe(ctx) : null;

    const tok = opts.token;
    if (tok !== undefined && tok !== null && typeof tok !== "string" && typeof tok !== "function") {
      throw new TypeError("wsgate: token must be a string or a (possibly async) function returning one");
    }
    this._tokenSource = tok ?? undefined;
    this._token = null; // {value, claims, obtainedAt}
    this._freshReason = null; // set: the next attempt asks the token function again, with this reason
    this._refusedOnce = false;

    this.state = "connecting";
    this.error = null;
    this.peerId = null;
    this.nodeId = null;
    this.user = null;
    this.resumed = false;

    this._listeners = new Map();
    this._topics = new Map(); // topic -> {handles, lastSeq, acked, awaitingResub, buffer}
    this._serverHas = new Set(); // topics whose last command sent on this session was `sub`
    this._outstanding = new Map(); // topic -> sub/unsub commands sent on this connection, not yet answered
    this._dirty = new Set(); // topics with unanswered commands when the last connection dropped
    this._strays = new Set();
    this._queue = [];
    this._inflight = [];
    this._conn = null;
    this._gen = 0;
    this._attempt = 0;
    this._everOpen = false;
    this._reconnectTimer = null;
    this._helloTimer = null;
    this._refreshTimer = null;
    this.lastClose = null; // {code, reason} of the last socket that ended

    if (opts.onState) this.on("state", opts.onState);
    if (opts.onError) this.on("error", opts.onError);
    if (opts.onDirect) this.on("direct", opts.onDirect);

    // Start after `connect()` returned, so callbacks may use the returned object.
    Promise.resolve().then(() => {
      if (this.state !== "closed") {
        this._emit("state", "connecting", { previous: null });
        this._startAttempt().catch((e) => this._internal(e));
      }
    });
  }

  static _normalizeUrl(url) {
    const base = typeof globalThis.location !== "undefined" ? globalThis.location.href : undefined;
    const u = new URL(String(url), base);
    if (u.protocol === "http:") u.protocol = "ws:";
    else if (u.protocol === "https:") u.protocol = "wss:";
    if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`wsgate: not a ws/wss/http/https URL: ${url}`);
    return u.toString();
  }

  static _httpUrl(wsUrl, path) {
    const u = new URL(path, wsUrl);
    u.protocol = u.protocol === "wss:" ? "https:" : "http:";
    u.search = "";
    return u.toString();
  }

  // ---------------------------------------------------------------- events

  /** Adds a listener; returns a function that removes it. Events: state, direct, gap, hello, auth, reconnect, error, unknown. */
  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("wsgate: listener must be a function");
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) return false;
    for (const fn of [...set]) this._safe(fn, ...args);
    return true;
  }

  /** Runs application code; an exception goes to the "error" listeners, never into the client. */
  _safe(fn, ...args) {
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (e) {
      this._reportError(new WsgateError("CALLBACK", `wsgate: a callback threw: ${e?.message ?? e}`, { cause: e }));
    }
  }

  _reportError(err) {
    const set = this._listeners.get("error");
    if (set && set.size) {
      for (const fn of [...set]) {
        try {
          fn(err);
        } catch (e) {
          console.error(e);
        }
      }
    } else if (err.code === "CALLBACK" || err.code === "INTERNAL") {
      console.error(err); // never swallow a bug silently
    }
  }

  _internal(e) {
    this._reportError(new WsgateError("INTERNAL", `wsgate: internal error: ${e?.message ?? e}`, { cause: e }));
  }

  _setState(state, info = {}) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", state, { previous, ...info });
  }

  // ---------------------------------------------------------------- public API

  subscribe(topic, onMessage, opts = {}) {
    if (!isValidTopic(topic)) throw new TypeError(`wsgate: invalid topic ${JSON.stringify(topic)} (1-128 of [A-Za-z0-9._:-])`);
    if (typeof onMessage !== "function") throw new TypeError("wsgate: subscribe needs an onMessage function");
    if (this.state === "closed") throw this._closedError();
    const h = new Subscription(this, topic, onMessage, opts ?? {});
    let entry = this._topics.get(topic);
    if (!entry) {
      entry = { handles: new Set(), lastSeq: undefined, acked: false, awaitingResub: null, buffer: [] };
      this._topics.set(topic, entry);
      this._strays.delete(topic);
      if (this._isOpen()) this._sendSub(topic);
    } else if (entry.acked) {
      h._ready.resolve(entry.lastSeq ?? 0);
    }
    entry.handles.add(h);
    return h;
  }

  publish(topic, data) {
    if (!isValidTopic(topic)) return Promise.reject(new TypeError(`wsgate: invalid topic ${JSON.stringify(topic)}`));
    const payload = Gateway._payload(data);
    if (payload instanceof Error) return Promise.reject(payload);
    return this._call({ kind: "pub", topic, payload });
  }

  who(topic) {
    if (!isValidTopic(topic)) return Promise.reject(new TypeError(`wsgate: invalid topic ${JSON.stringify(topic)}`));
    return this._call({ kind: "who", topic });
  }

  send(data) {
    const payload = Gateway._payload(data);
    if (payload instanceof Error) return Promise.reject(payload);
    return this._call({ kind: "send", topic: null, payload });
  }

  /** Closes for good (code 1000: the gateway ends the session at once). */
  close() {
    if (this.state === "closed") return;
    const err = new WsgateError("CLOSED", "wsgate: the client was closed");
    this._shutdown(err, { code: 1000, reason: "client closed" });
    this._setState("closed", {});
  }

  // ---------------------------------------------------------------- calls

  static _payload(data) {
    if (typeof data === "string") return data;
    const bytes = toBytes(data);
    if (bytes) return bytes;
    return new TypeError("wsgate: data must be a string, an ArrayBuffer or an ArrayBufferView (Uint8Array, Buffer, ...)");
  }

  _isOpen() {
    return !!(this._conn && this._conn.hello);
  }

  _closedError() {
    return this.error ?? new WsgateError("CLOSED", "wsgate: the client is closed");
  }

  _call(c) {
    if (this.state === "closed") return Promise.reject(this._closedError());
    return new Promise((resolve, reject) => {
      c.resolve = resolve;
      c.reject = reject;
      if (this._isOpen()) {
        this._transmit(c);
      } else if (this._queue.length >= this._cfg.maxQueue) {
        reject(
          new WsgateError(
            "QUEUE_FULL",
            `wsgate: ${c.kind} refused: ${this._queue.length} calls are already queued while the connection is ${this.state} (maxQueue ${this._cfg.maxQueue})`,
          ),
        );
      } else {
        this._queue.push(c);
      }
    });
  }

  _transmit(c) {
    this._inflight.push(c);
    const p = c.payload;
    switch (c.kind) {
      case "pub":
        this._write(typeof p === "string" ? `pub ${c.topic} ${p}` : binaryFrame(`pub ${c.topic}`, p));
        break;
      case "who":
        this._write(`who ${c.topic}`);
        break;
      case "send":
        this._write(typeof p === "string" ? `send ${p}` : binaryFrame("send", p));
        break;
      case "auth":
        this._write(`auth ${p}`);
        break;
    }
  }

  _write(frame) {
    const ws = this._conn?.ws;
    if (!ws) return;
    try {
      ws.send(frame);
    } catch (e) {
      // The socket is going away; its close event rejects or re-queues what is in flight.
      this._reportError(new WsgateError("SEND", `wsgate: send failed: ${e?.message ?? e}`, { cause: e }));
    }
  }

  /** The first call in flight of `kind` (and `topic`, when given); removed from the list. */
  _take(kind, topic) {
    const i = this._inflight.findIndex((c) => c.kind === kind && (topic === undefined || c.topic === topic));
    return i < 0 ? null : this._inflight.splice(i, 1)[0];
  }

  // ---------------------------------------------------------------- subscriptions

  _bump(topic, d) {
    const n = (this._outstanding.get(topic) ?? 0) + d;
    if (n > 0) this._outstanding.set(topic, n);
    else this._outstanding.delete(topic);
  }

  _sendSub(topic) {
    const entry = this._topics.get(topic);
    if (entry) entry.acked = false;
    this._serverHas.add(topic);
    this._bump(topic, 1);
    this._write(`sub ${topic}`);
  }

  _sendUnsub(topic) {
    this._serverHas.delete(topic);
    this._bump(topic, 1);
    this._write(`unsub ${topic}`);
  }

  _unsubscribe(h) {
    if (!h.active) return;
    h.active = false;
    h._ready.reject(new WsgateError("UNSUBSCRIBED", `wsgate: unsubscribed from ${h.topic}`));
    const entry = this._topics.get(h.topic);
    if (!entry) return;
    entry.handles.delete(h);
    if (entry.handles.size === 0) {
      this._topics.delete(h.topic);
      if (this._isOpen() && this._serverHas.has(h.topic)) this._sendUnsub(h.topic);
    }
  }

  /** The gateway dropped or refused a subscription: every handle of it ends with `err`. */
  _dropTopic(topic, err) {
    const entry = this._topics.get(topic);
    this._serverHas.delete(topic);
    if (!entry) return;
    this._topics.delete(topic);
    for (const h of entry.handles) {
      h.active = false;
      h._ready.reject(err);
      if (h._onError) this._safe(h._onError, err);
    }
    this._reportError(err);
  }

  /** After `hello`: make the gateway's subscriptions match the live handles. */
  _reconcile(resumed) {
    if (!resumed) {
      this._serverHas.clear();
      for (const [topic, entry] of this._topics) {
        if (entry.lastSeq !== undefined) entry.awaitingResub = { prev: entry.lastSeq };
        this._sendSub(topic);
      }
    } else {
      const topics = new Set([...this._topics.keys(), ...this._serverHas]);
      for (const topic of topics) {
        const want = this._topics.has(topic);
        if (want !== this._serverHas.has(topic) || this._dirty.has(topic)) {
          if (want) this._sendSub(topic);
          else this._sendUnsub(topic);
        }
      }
    }
    this._dirty.clear();
  }

  /** A line for a topic nobody here wants (e.g. a session resumed after a page reload). */
  _stray(topic) {
    if (!this._isOpen() || this._topics.has(topic) || this._outstanding.has(topic) || this._strays.has(topic)) return;
    this._strays.add(topic);
    this._sendUnsub(topic);
  }

  _gap(topic, entry, info) {
    const full = { topic, ...info };
    if (entry) for (const h of [...entry.handles]) if (h._onGap) this._safe(h._onGap, full);
    this._emit("gap", full);
  }

  _deliver(topic, entry, seq, data, binary) {
    if (entry.lastSeq !== undefined && seq <= entry.lastSeq) return; // already delivered: drop
    if (entry.lastSeq !== undefined && seq > entry.lastSeq + 1) {
      // A hole the gateway did not report (e.g. bytes a proxy acknowledged for a socket whose
      // client was already gone): the application hears of it all the same.
      this._gap(topic, entry, { from: entry.lastSeq + 1, to: seq - 1, reason: "missed" });
    }
    entry.lastSeq = seq;
    const meta = { topic, seq, binary };
    for (const h of [...entry.handles]) if (h.active) this._safe(h._onMessage, data, meta);
  }

  // ---------------------------------------------------------------- tokens

  _setToken(value) {
    this._token = { value, claims: decodeJwt(value), obtainedAt: this._now() };
  }

  _refreshPointMs(t) {
    const exp = t?.claims?.exp;
    if (typeof exp !== "number") return null;
    const iat = typeof t.claims.iat === "number" ? t.claims.iat : t.obtainedAt / 1000;
    return (iat + this._cfg.refreshAt * Math.max(0, exp - iat)) * 1000;
  }

  async _obtainToken() {
    const src = this._tokenSource;
    if (typeof src === "string") {
      if (!this._token || this._token.value !== src) this._setToken(src);
      return src;
    }
    const cur = this._token;
    let reason = this._freshReason;
    if (!reason) {
      if (!cur) reason = "initial";
      else {
        const at = this._refreshPointMs(cur);
        if (at !== null && this._now() >= at) reason = "stale";
      }
    }
    if (!reason) return cur.value;
    const value = await src({ reason });
    if (typeof value !== "string" || value === "") throw new TypeError("the token function returned no string");
    this._setToken(value);
    this._freshReason = null;
    return value;
  }

  _scheduleRefresh(conn) {
    this._clearRefresh();
    if (typeof this._tokenSource !== "function") return;
    const at = this._refreshPointMs(this._token);
    if (at === null) return;
    this._armRefresh(conn, Math.max(1000, at - this._now()));
  }

  _armRefresh(conn, delay) {
    this._clearRefresh();
    this._refreshTimer = this._setTimeout(() => {
      this._refreshTimer = null;
      this._refresh(conn).catch((e) => this._internal(e));
    }, delay);
  }

  _clearRefresh() {
    if (this._refreshTimer !== null) this._clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
  }

  /** A later try while the current token still holds: half of what is left, at least a second. */
  _retryRefresh(conn) {
    const exp = this._token?.claims?.exp;
    if (typeof exp !== "number") return;
    const left = exp * 1000 - this._now();
    if (left > 0) this._armRefresh(conn, Math.max(1000, left / 2));
  }

  async _refresh(conn) {
    if (conn !== this._conn || !conn.hello) return;
    let value;
    try {
      value = await this._tokenSource({ reason: "refresh" });
      if (typeof value !== "string" || value === "") throw new TypeError("the token function returned no string");
    } catch (e) {
      this._reportError(new WsgateError("TOKEN", `wsgate: token refresh failed: ${e?.message ?? e}`, { cause: e }));
      if (conn === this._conn) this._retryRefresh(conn);
      return;
    }
    if (conn !== this._conn || !conn.hello) {
      this._setToken(value); // not sent: kept for the next upgrade
      return;
    }
    if (value === this._token?.value) {
      this._retryRefresh(conn);
      return;
    }
    let exp;
    try {
      exp = await new Promise((resolve, reject) => {
        const c = { kind: "auth", topic: null, payload: value, resolve, reject };
        this._transmit(c);
      });
    } catch (e) {
      if (e.code === "CONNECTION_LOST" || e.code === "CLOSED" || this.state === "closed") {
        if (e.code === "CONNECTION_LOST") this._setToken(value);
        return;
      }
      if (e.status === 401 && /^auth invalid$/.test(e.text ?? "")) {
        // The new token was refused; the old one stays in force. Try again before it ends.
        this._reportError(e);
        if (conn === this._conn) this._retryRefresh(conn);
      } else {
        // No in-band refresh here (auth off, or the hook alone decides): use it on the next upgrade.
        this._setToken(value);
      }
      return;
    }
    this._setToken(value);
    this._emit("auth", { exp });
    if (conn === this._conn) this._scheduleRefresh(conn);
  }

  // ---------------------------------------------------------------- connections

  _clearTimer(name) {
    if (this[name] !== null) this._clearTimeout(this[name]);
    this[name] = null;
  }

  async _startAttempt() {
    const gen = ++this._gen;
    this._reconnectTimer = null;
    const stale = () => gen !== this._gen || this.state === "closed";
    let token = null;
    if (this._tokenSource !== undefined) {
      try {
        token = await this._obtainToken();
      } catch (e) {
        if (stale()) return;
        this._reportError(new WsgateError("TOKEN", `wsgate: the token function failed: ${e?.message ?? e}`, { cause: e }));
        this._scheduleReconnect("backoff", {});
        return;
      }
      if (stale()) return;
    }
    if (this._jar && this._fetch) {
      await this._refreshSession();
      if (stale()) return;
    }
    const WS = this._opts.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      this._terminal(new WsgateError("NO_WEBSOCKET", "wsgate: no WebSocket class (pass options.WebSocket, or use Node >= 22)"));
      return;
    }
    let url = this._url;
    const headers = {};
    if (token !== null) {
      if (this._tokenIn === "header") headers.Authorization = `Bearer ${token}`;
      else {
        const u = new URL(url);
        u.searchParams.set("token", token);
        url = u.toString();
      }
    }
    if (this._jar && this._jar.size) headers.Cookie = this._cookieHeader();
    let ws;
    try {
      ws = Object.keys(headers).length ? new WS(url, { headers }) : new WS(url);
    } catch (e) {
      this._reportError(new WsgateError("CONNECT", `wsgate: cannot open a WebSocket: ${e?.message ?? e}`, { cause: e }));
      this._scheduleReconnect("backoff", {});
      return;
    }
    try {
      ws.binaryType = "arraybuffer";
    } catch {
      /* some implementations fix it */
    }
    const conn = { ws, gen, opened: false, hello: false, openedAt: 0, done: false };
    this._conn = conn;
    ws.onopen = () => {
      if (!conn.done) conn.opened = true;
    };
    ws.onmessage = (ev) => {
      if (!conn.done) this._onData(conn, ev.data);
    };
    // By the WebSocket spec an `error` event is always followed by close 1006; do not wait for it.
    ws.onerror = () => {
      if (!conn.done) this._finish(conn, 1006, "", true);
    };
    ws.onclose = (ev) => {
      if (!conn.done) this._finish(conn, ev?.code ?? 1006, ev?.reason ?? "", false);
    };
    this._helloTimer = this._setTimeout(() => {
      this._helloTimer = null;
      if (!conn.done && !conn.hello) this._finish(conn, 1006, "no hello in time", true);
    }, this._cfg.helloTimeout);
  }

  _cookieHeader() {
    return [...this._jar].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  /** Node: `GET /ws-session` with our cookies; keeps every cookie it sets (gateway's and balancer's). */
  async _refreshSession() {
    try {
      const headers = this._jar.size ? { Cookie: this._cookieHeader() } : {};
      const res = await this._fetch(this._sessionUrl, { method: "GET", headers, redirect: "manual" });
      this._absorbCookies(res.headers);
      try {
        await res.body?.cancel?.();
      } catch {
        /* nothing to drain */
      }
    } catch {
      // Unreachable: the upgrade will fail the same way and back off.
    }
  }

  _absorbCookies(headers) {
    if (!headers) return;
    let lines = [];
    if (typeof headers.getSetCookie === "function") lines = headers.getSetCookie();
    else {
      const joined = typeof headers.get === "function" ? headers.get("set-cookie") : null;
      if (joined) lines = joined.split(/,(?=\s*[^=;,\s]+=)/);
    }
    for (const line of lines) {
      const [pair, ...attrs] = line.split(";");
      const eq = pair.indexOf("=");
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const gone = attrs.some((a) => /^\s*max-age\s*=\s*(0|-\d+)\s*$/i.test(a));
      if (gone) this._jar.delete(name);
      else this._jar.set(name, value);
    }
  }

  /** The default refusal probe: GET the health route; 200 means a serving gateway refused us. */
  async _healthProbe({ healthUrl }) {
    try {
      const res = await this._fetch(healthUrl, { method: "GET", cache: "no-store" });
      try {
        await res.body?.cancel?.();
      } catch {
        /* nothing to drain */
      }
      return res.status === 200 ? "refused" : "unavailable";
    } catch {
      return "unreachable";
    }
  }

  _finish(conn, code, reason, abort) {
    conn.done = true;
    const ws = conn.ws;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (abort) {
      try {
        ws.close();
      } catch {
        /* already gone */
      }
    }
    if (this._conn === conn) this._conn = null;
    this._clearTimer("_helloTimer");
    this._clearRefresh();
    this.lastClose = { code, reason };
    if (conn.hello && this._now() - conn.openedAt >= this._cfg.stableAfter) this._attempt = 0;

    // What was sent and not answered: idempotent reads go again, writes report an unknown outcome.
    const requeue = [];
    for (const c of this._inflight) {
      if (c.kind === "who") requeue.push(c);
      else
        c.reject(
          new WsgateError(
            "CONNECTION_LOST",
            `wsgate: the connection dropped before the gateway answered ${c.kind}${c.topic ? " " + c.topic : ""}; it may or may not have been applied`,
          ),
        );
    }
    this._inflight = [];
    this._queue.unshift(...requeue);
    for (const t of this._outstanding.keys()) this._dirty.add(t);
    this._outstanding.clear();
    this._strays.clear();
    // A topic still waiting for its post-new-session `ok sub` keeps waiting (and holding its
    // messages): the next connection sends `sub` again and its answer settles it.

    if (this.state === "closed") return;
    const info = { code, reason };
    const why = { closeCode: code, closeReason: reason };
    if (code === 1008 && reason === "replaced") {
      this._terminal(new WsgateError("REPLACED", "wsgate: another connection with this session took over (close 1008 \"replaced\"); not reconnecting", why));
      return;
    }
    if (code === 1008 && reason === "token expired") {
      if (typeof this._tokenSource !== "function") {
        this._terminal(new WsgateError("TOKEN_EXPIRED", "wsgate: the token expired (close 1008) and no token function can renew it", why));
        return;
      }
      this._freshReason = "expired";
      this._scheduleReconnect("quick", info);
      return;
    }
    if (code === 1001) {
      this._scheduleReconnect("quick", info);
      return;
    }
    if (!conn.opened && this._tokenSource !== undefined) {
      this._classifyFailure(conn.gen, info).catch((e) => this._internal(e));
      return;
    }
    this._scheduleReconnect("backoff", info);
  }

  /** A failure before `open` with a token: a 401 refusal, or just a failure? (README "401 detection") */
  async _classifyFailure(gen, info) {
    let verdict = null;
    const exp = this._token?.claims?.exp;
    if (typeof exp === "number" && this._now() >= exp * 1000) verdict = "refused";
    else if (this._probe) {
      try {
        verdict = await this._probe({ url: this._url, healthUrl: this._healthUrl, fetch: this._fetch });
      } catch {
        verdict = null;
      }
      if (gen !== this._gen || this.state === "closed" || this._conn || this._reconnectTimer !== null) return;
    }
    if (verdict !== "refused") {
      this._scheduleReconnect("backoff", info);
      return;
    }
    if (typeof this._tokenSource === "function" && !this._refusedOnce) {
      this._refusedOnce = true;
      this._freshReason = "refused";
      this._scheduleReconnect("quick", { ...info, refused: true });
      return;
    }
    this._terminal(
      new WsgateError(
        "REFUSED",
        typeof this._tokenSource === "function"
          ? "wsgate: the gateway refused the upgrade again with a fresh token (401?); giving up"
          : "wsgate: the gateway refused the upgrade (401?) and the token is a fixed string; giving up",
        { closeCode: info.code, closeReason: info.reason },
      ),
    );
  }

  _scheduleReconnect(kind, info) {
    if (this.state === "closed") return;
    const delay =
      kind === "quick"
        ? Math.floor(this._random() * this._cfg.drainDelay)
        : backoffDelay(this._attempt++, this._random, this._cfg.minDelay, this._cfg.maxDelay);
    this._clearTimer("_reconnectTimer");
    this._reconnectTimer = this._setTimeout(() => {
      this._reconnectTimer = null;
      this._startAttempt().catch((e) => this._internal(e));
    }, delay);
    this._setState(this._everOpen ? "reconnecting" : "connecting", { ...info, delay });
    this._emit("reconnect", { ...info, delay, kind });
  }

  /** Stops for good: every waiting call and handle gets `err`. */
  _terminal(err) {
    this.error = err;
    this._shutdown(err, null);
    this._reportError(err);
    // The close that ended it, where there was one (as for `reconnecting`).
    const info = { error: err };
    if (err.closeCode !== undefined) Object.assign(info, { code: err.closeCode, reason: err.closeReason });
    this._setState("closed", info);
  }

  _shutdown(err, closeFrame) {
    this._gen++;
    this._clearTimer("_reconnectTimer");
    this._clearTimer("_helloTimer");
    this._clearRefresh();
    const conn = this._conn;
    this._conn = null;
    if (conn) {
      conn.done = true;
      const ws = conn.ws;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        if (closeFrame) ws.close(closeFrame.code, closeFrame.reason);
        else ws.close();
      } catch {
        /* already gone */
      }
    }
    const calls = [...this._inflight, ...this._queue];
    this._inflight = [];
    this._queue = [];
    // Rejections run their handlers later, after the caller has set the state to "closed".
    for (const c of calls) c.reject(err);
    for (const entry of this._topics.values()) for (const h of entry.handles) h._ready.reject(err);
  }

  // ---------------------------------------------------------------- incoming lines

  _onData(conn, data) {
    if (typeof data === "string") {
      this._onLine(conn, data, null);
      return;
    }
    const bytes = toBytes(data);
    if (!bytes) {
      this._reportError(new WsgateError("PROTOCOL", "wsgate: a binary message arrived as a Blob; set binaryType to \"arraybuffer\""));
      return;
    }
    const nl = bytes.indexOf(10);
    if (nl < 0) {
      this._reportError(new WsgateError("PROTOCOL", "wsgate: a binary message without a header line"));
      return;
    }
    this._onLine(conn, decoder.decode(bytes.subarray(0, nl)), bytes.slice(nl + 1));
  }

  _onLine(conn, line, bin) {
    const [verb, rest] = word(line);
    switch (verb) {
      case "hello":
        return this._onHello(conn, (rest ?? "").split(" "));
      case "msg": {
        const [topic, r1] = word(rest ?? "");
        let seqStr = r1 ?? "";
        let text = "";
        if (bin === null) [seqStr, text] = word(seqStr);
        const seq = parseSeq(seqStr);
        if (!Number.isFinite(seq)) return this._protocol(line);
        const entry = this._topics.get(topic);
        if (!entry) return this._stray(topic);
        const data = bin ?? text ?? "";
        if (entry.awaitingResub) entry.buffer.push([seq, data, bin !== null]);
        else this._deliver(topic, entry, seq, data, bin !== null);
        return;
      }
      case "ok":
        return this._onOk((rest ?? "").split(" "), line);
      case "members": {
        const [topic, n, ...ids] = (rest ?? "").split(" ").filter((s, i) => i < 2 || s !== "");
        const c = this._take("who", topic);
        if (!c) return;
        const members = ids.map(member);
        const count = parseSeq(n);
        c.resolve({ topic, count, members, complete: members.length === count });
        return;
      }
      case "join":
      case "leave": {
        const [topic, peer, user] = (rest ?? "").split(" ");
        const entry = this._topics.get(topic);
        if (!entry) return this._stray(topic);
        const ev = user === undefined ? { topic, peer } : { topic, peer, user };
        for (const h of [...entry.handles]) {
          const fn = verb === "join" ? h._onJoin : h._onLeave;
          if (h.active && fn) this._safe(fn, ev);
        }
        return;
      }
      case "gap": {
        const [topic, a, b] = (rest ?? "").split(" ");
        const from = parseSeq(a);
        const to = parseSeq(b);
        if (!Number.isFinite(from) || !Number.isFinite(to)) return this._protocol(line);
        const entry = this._topics.get(topic);
        if (entry) entry.lastSeq = Math.max(entry.lastSeq ?? 0, to);
        this._gap(topic, entry, { from, to, reason: "history" });
        return;
      }
      case "err":
        return this._onErr(line, rest ?? "");
      case "direct":
        this._emit("direct", bin ?? rest ?? "", { binary: bin !== null });
        return;
      case "reply": {
        const c = this._take("send");
        if (c) c.resolve(bin ?? rest ?? "");
        return;
      }
      default:
        // A line this version does not know: ignored (forward compatible).
        this._emit("unknown", line);
    }
  }

  _protocol(line) {
    this._reportError(new WsgateError("PROTOCOL", `wsgate: cannot parse gateway line ${JSON.stringify(line.slice(0, 200))}`));
  }

  _onHello(conn, [peer, st, node, user]) {
    if (conn.hello) return;
    const resumed = st === "resumed";
    conn.hello = true;
    conn.openedAt = this._now();
    this._clearTimer("_helloTimer");
    this.peerId = peer ?? null;
    this.nodeId = node ?? null;
    this.user = user ?? null;
    this.resumed = resumed;
    this._refusedOnce = false;
    this._everOpen = true;
    this._reconcile(resumed);
    for (const c of this._queue.splice(0)) this._transmit(c);
    this._scheduleRefresh(conn);
    const info = { resumed, peer: this.peerId, node: this.nodeId, user: this.user };
    this._setState("open", info);
    this._emit("hello", info);
  }

  _onOk([cmd, topic, arg], line) {
    switch (cmd) {
      case "sub": {
        this._bump(topic, -1);
        const entry = this._topics.get(topic);
        const n = parseSeq(arg);
        if (!entry || !Number.isFinite(n)) return;
        if (entry.awaitingResub) {
          const prev = entry.awaitingResub.prev;
          entry.awaitingResub = null;
          // A new session: what was published meanwhile is not replayed. Numbering that went
          // backwards means the topic restarted (forgotten, or a node without shared numbering).
          const info = n >= prev ? { from: prev + 1, to: n, reason: "new-session" } : { from: 1, to: n, reason: "reset" };
          entry.lastSeq = n;
          this._gap(topic, entry, info);
          const held = entry.buffer;
          entry.buffer = [];
          for (const [seq, data, binary] of held) this._deliver(topic, entry, seq, data, binary);
        } else {
          entry.lastSeq = Math.max(entry.lastSeq ?? n, n);
        }
        entry.acked = true;
        for (const h of entry.handles) h._ready.resolve(entry.lastSeq);
        return;
      }
      case "unsub":
        this._bump(topic, -1);
        return;
      case "pub": {
        const c = this._take("pub", topic);
        if (c) c.resolve(parseSeq(arg));
        return;
      }
      case "auth": {
        const c = this._take("auth");
        if (c) c.resolve(parseSeq(topic));
        return;
      }
      default:
        this._emit("unknown", line);
    }
  }

  _onErr(line, rest) {
    const [codeStr, text] = word(rest);
    const status = Number(codeStr);
    const t = text ?? "";
    const mk = (code) => new WsgateError(code, `wsgate: gateway answered: ${line}`, { status, text: t, line });
    // `err 403 <command> <topic> forbidden|revoked`: names its command.
    const m = /^(sub|pub|who|unsub) (\S+) (forbidden|revoked)$/.exec(t);
    if (m) {
      const [, cmd, topic, what] = m;
      if (cmd === "sub") {
        if (what === "forbidden") this._bump(topic, -1);
        this._dropTopic(topic, mk(what === "revoked" ? "REVOKED" : "FORBIDDEN"));
        return;
      }
      const c = this._take(cmd, topic);
      if (c) c.reject(mk("FORBIDDEN"));
      else this._reportError(mk("GATEWAY"));
      return;
    }
    let c = null;
    if (/^auth\b/.test(t)) c = this._take("auth");
    else if (/^send failed\b|^busy\b/.test(t)) c = this._take("send");
    else if (/^unknown command\b/.test(t)) c = this._take("send") ?? this._take("auth");
    // Anything else names no command: the oldest call in flight is the best guess.
    if (!c && this._inflight.length && !/^auth\b/.test(t)) c = this._inflight.shift();
    if (c) c.reject(mk(c.kind === "send" && status === 400 && /^unknown command/.test(t) ? "UNSUPPORTED" : "GATEWAY"));
    else this._reportError(mk("GATEWAY"));
  }
}

/**
 * Connects to a wsgate gateway endpoint and keeps the connection (see README).
 * @param {string|URL} url  ws://, wss://, http:// or https:// URL of the gateway path (e.g. wss://host/ws)
 * @param {object} [options]
 */
export function connect(url, options = {}) {
  return new Gateway(url, options);
}

export default connect;
