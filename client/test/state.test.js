import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../wsgate.js";
import { setup, flush, fakeClock, fakeWebSocketClass, jwt } from "./fakes.js";

test("state: connecting -> open -> reconnecting -> open -> closed, each reported once", async () => {
  const { gw, WebSocket, clock, stateNames, states } = setup();
  assert.equal(gw.state, "connecting");
  await flush();
  WebSocket.last().fail(); // the first attempt failing is still "connecting"
  assert.equal(gw.state, "connecting");
  await clock.next();
  WebSocket.last().accept("new", "00000000000000aa", "node-7");
  assert.equal(gw.state, "open");
  assert.equal(gw.peerId, "00000000000000aa");
  assert.equal(gw.nodeId, "node-7");
  WebSocket.last().serverClose(1006);
  assert.equal(gw.state, "reconnecting");
  await clock.next();
  WebSocket.last().fail(); // still reconnecting: no repeated report
  await clock.next();
  WebSocket.last().accept("resumed");
  gw.close();
  assert.deepEqual(stateNames(), ["connecting", "open", "reconnecting", "open", "closed"]);
  const open2 = states[3][1];
  assert.equal(open2.resumed, true);
  assert.equal(open2.previous, "reconnecting");
  assert.equal(typeof states[2][1].delay, "number");
});

test("onState may use the returned client (the first report comes after connect() returns)", async () => {
  const clock = fakeClock();
  const seen = [];
  const gw = connect("ws://gw.test/ws", {
    WebSocket: fakeWebSocketClass(),
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    cookies: "browser",
    onState: (s) => seen.push([s, gw.state]),
  });
  await flush();
  assert.deepEqual(seen, [["connecting", "connecting"]]);
  gw.close();
});

test("close 1001 (drain): back within a short jitter, the backoff not grown", async () => {
  const { WebSocket, clock } = setup({ random: () => 0.9 });
  await flush();
  WebSocket.last().accept("new");
  WebSocket.last().serverClose(1001, "draining");
  assert.deepEqual(
    clock.pending().map((t) => t.ms),
    [900],
    "0.9 of the 1 s drain window",
  );
  await clock.next();
  assert.equal(WebSocket.sockets.length, 2);
  WebSocket.last().fail();
  assert.deepEqual(
    clock.pending().map((t) => t.ms),
    [225],
    "the next failure starts the backoff at its first step",
  );
});

test("close 1008 \"replaced\": stays closed, no reconnect, error says why", async () => {
  const { gw, WebSocket, clock, errors, states } = setup();
  const p = gw.publish("t", "x");
  await flush();
  WebSocket.last().open(); // opened, no hello yet: the publish is still queued
  WebSocket.last().recv("hello 00000000000000aa new n");
  WebSocket.last().serverClose(1008, "replaced");
  assert.equal(gw.state, "closed");
  assert.equal(gw.error.code, "REPLACED");
  assert.equal(errors.at(-1).code, "REPLACED");
  const [name, info] = states.at(-1);
  assert.deepEqual([name, info.code, info.reason], ["closed", 1008, "replaced"]);
  await assert.rejects(p, { code: "CONNECTION_LOST" });
  assert.deepEqual(clock.pending(), []);
  await clock.advance(600_000);
  assert.equal(WebSocket.sockets.length, 1);
});

test("close 1008 \"token expired\": a new token is fetched first, then the reconnect uses it", async () => {
  let n = 0;
  const reasons = [];
  const { gw, WebSocket, clock } = setup({
    token: async ({ reason }) => {
      reasons.push(reason);
      return `tok${++n}`;
    },
  });
  await flush();
  assert.match(WebSocket.last().url, /[?&]token=tok1$/);
  WebSocket.last().accept("new");
  WebSocket.last().serverClose(1008, "token expired");
  assert.equal(gw.state, "reconnecting");
  assert.ok(clock.pending()[0].ms < 1000, "a quick return");
  await clock.next();
  assert.deepEqual(reasons, ["initial", "expired"]);
  assert.match(WebSocket.last().url, /[?&]token=tok2$/);
  assert.equal(WebSocket.sockets.length, 2);
});

test("close 1008 \"token expired\" with a fixed token string: stops with an error", async () => {
  const { gw, WebSocket, clock } = setup({ token: "fixed" });
  await flush();
  WebSocket.last().accept("new");
  WebSocket.last().serverClose(1008, "token expired");
  assert.equal(gw.state, "closed");
  assert.equal(gw.error.code, "TOKEN_EXPIRED");
  assert.deepEqual(clock.pending(), []);
});

test("other 1008s (e.g. a slow consumer) reconnect with backoff", async () => {
  const { gw, WebSocket, clock } = setup();
  await flush();
  WebSocket.last().accept("new");
  WebSocket.last().serverClose(1008, "policy");
  assert.equal(gw.state, "reconnecting");
  await clock.next();
  assert.equal(WebSocket.sockets.length, 2);
});

test("a refused upgrade (probe says the gateway serves) asks for a new token once, then stops", async () => {
  const reasons = [];
  const probes = [];
  const { gw, WebSocket, clock, stateNames } = setup({
    token: async ({ reason }) => {
      reasons.push(reason);
      return "t-" + reasons.length;
    },
    probe: async (ctx) => {
      probes.push(ctx.healthUrl);
      return "refused";
    },
  });
  await flush();
  WebSocket.last().fail();
  await flush();
  assert.deepEqual(probes, ["http://gw.test/ws-health"]);
  await clock.next();
  assert.deepEqual(reasons, ["initial", "refused"]);
  assert.match(WebSocket.last().url, /token=t-2/);
  WebSocket.last().fail();
  await flush();
  assert.equal(gw.state, "closed");
  assert.equal(gw.error.code, "REFUSED");
  assert.deepEqual(clock.pending(), []);
  assert.deepEqual(stateNames(), ["connecting", "closed"]);
  assert.equal(WebSocket.sockets.length, 2);
});

test("a failure the probe does not call a refusal keeps backing off, never stops", async () => {
  const { gw, WebSocket, clock } = setup({ token: async () => "t", probe: async () => "unavailable" });
  await flush();
  for (let i = 0; i < 6; i++) {
    WebSocket.last().fail();
    await clock.next();
  }
  assert.equal(gw.state, "connecting");
  assert.equal(WebSocket.sockets.length, 7);
});

test("the default probe reads GET /ws-health: 200 -> refusal, 503 -> keep trying", async () => {
  for (const [status, expectClosed] of [
    [200, true],
    [503, false],
  ]) {
    const fetched = [];
    const { gw, WebSocket, clock } = setup({
      token: "static",
      probe: undefined,
      fetch: async (url) => {
        fetched.push(url);
        return { status, headers: new Headers() };
      },
    });
    await flush();
    WebSocket.last().fail();
    await flush();
    assert.deepEqual(fetched, ["http://gw.test/ws-health"]);
    assert.equal(gw.state === "closed", expectClosed, `status ${status}`);
    if (!expectClosed) assert.equal(clock.pending().length, 1);
  }
});

test("a token whose exp has passed by the local clock counts as refused without a probe", async () => {
  const clock = fakeClock();
  const expired = jwt({ sub: "a", iat: clock.now() / 1000 - 100, exp: clock.now() / 1000 - 10 });
  let asked = 0;
  const { gw, WebSocket } = setup({
    clock,
    token: expired,
    probe: async () => {
      asked++;
      return "unreachable";
    },
  });
  await flush();
  WebSocket.last().fail();
  await flush();
  assert.equal(asked, 0);
  assert.equal(gw.state, "closed");
  assert.equal(gw.error.code, "REFUSED");
});

test("no hello in time: the attempt is abandoned and retried", async () => {
  const { WebSocket, clock } = setup({ helloTimeout: 5000 });
  await flush();
  const ws = WebSocket.last();
  ws.open();
  await clock.advance(5000);
  assert.ok(ws.closedWith, "the stuck socket was closed");
  await clock.next();
  assert.equal(WebSocket.sockets.length, 2);
});
