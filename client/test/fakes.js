// Test doubles: a fake clock (timers + now), a scripted random, and a fake WebSocket class whose
// instances the test drives from the "server" side. No real sockets, no real timers.
import { connect } from "../wsgate.js";

/** Lets pending promise callbacks (token functions, fetches) run. */
export async function flush() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

export function fakeClock(start = 1_700_000_000_000) {
  let now = start;
  let nextId = 0;
  const timers = new Map();
  const clock = {
    now: () => now,
    setTimeout(fn, ms) {
      const id = ++nextId;
      timers.set(id, { id, fn, ms, at: now + Math.max(0, Number(ms) || 0) });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** Pending timers, earliest first. */
    pending() {
      return [...timers.values()].sort((a, b) => a.at - b.at || a.id - b.id);
    },
    /** Moves time forward by `ms`, running every timer that falls due, in order. */
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        await flush();
        const due = clock.pending().find((t) => t.at <= end);
        if (!due) break;
        timers.delete(due.id);
        now = due.at;
        due.fn();
      }
      now = end;
      await flush();
    },
    /** Runs the next timer (whatever its delay); returns its delay. */
    async next() {
      await flush();
      const t = clock.pending()[0];
      if (!t) throw new Error("no timer pending");
      await clock.advance(t.at - now);
      return t.ms;
    },
  };
  return clock;
}

/** Returns the given values in turn, then the last one forever. */
export function scriptedRandom(...values) {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)];
}

export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, init) {
      this.url = url;
      this.init = init;
      this.sent = [];
      this.readyState = 0;
      this.closedWith = null;
      this.binaryType = "blob";
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(typeof data === "string" ? data : new Uint8Array(data));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    /** Text frames the client sent. */
    get lines() {
      return this.sent.filter((d) => typeof d === "string");
    }
    // ---- the server's side
    open() {
      this.readyState = 1;
      this.onopen?.({ type: "open" });
    }
    recv(data) {
      this.onmessage?.({ type: "message", data });
    }
    recvBinary(header, bytes) {
      const head = new TextEncoder().encode(header + "\n");
      const out = new Uint8Array(head.length + bytes.length);
      out.set(head);
      out.set(bytes, head.length);
      this.recv(out.buffer);
    }
    /** Opens and sends `hello`. */
    accept(state = "new", peer = "00000000000000aa", node = "node-1", user) {
      this.open();
      this.recv(`hello ${peer} ${state} ${node}${user ? " " + user : ""}`);
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ type: "close", code, reason, wasClean: true });
    }
    /** A failed connection: error, then close 1006 (what a refused upgrade looks like). */
    fail() {
      this.readyState = 3;
      this.onerror?.({ type: "error" });
      this.onclose?.({ type: "close", code: 1006, reason: "", wasClean: false });
    }
  }
  FakeWebSocket.sockets = sockets;
  FakeWebSocket.last = () => sockets[sockets.length - 1];
  return FakeWebSocket;
}

/** A client wired to fakes. Returns the client, its clock, its socket class and what onState saw. */
export function setup(options = {}) {
  const clock = options.clock ?? fakeClock();
  const WebSocket = fakeWebSocketClass();
  const states = [];
  const errors = [];
  const gw = connect(options.url ?? "ws://gw.test/ws", {
    WebSocket,
    random: options.random ?? (() => 0.5),
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    cookies: "browser",
    probe: false,
    fetch: async () => {
      throw new Error("no network in unit tests");
    },
    onState: (s, info) => states.push([s, info]),
    onError: (e) => errors.push(e),
    ...options,
  });
  return { gw, clock, WebSocket, states, errors, stateNames: () => states.map(([s]) => s) };
}

/** Builds an unsigned JWT-shaped token with the given claims (the client only reads them). */
export function jwt(claims) {
  const b64 = (s) => Buffer.from(s).toString("base64url");
  return `${b64(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64(JSON.stringify(claims))}.c2ln`;
}
