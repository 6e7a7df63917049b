import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeJwt } from "../wsgate.js";
import { setup, flush, fakeClock, jwt } from "./fakes.js";

test("decodeJwt reads base64url payloads (- and _, no padding, UTF-8) and refuses non-JWTs", () => {
  // "?>?" encodes to "Pz4_" in base64url: the '_' must be read as '/'.
  const claims = { sub: "zoë", n: "?>?~~~", exp: 123 };
  const t = jwt(claims);
  assert.match(t.split(".")[1], /[-_]/, "the payload exercises the URL-safe alphabet");
  assert.deepEqual(decodeJwt(t), claims);
  assert.equal(decodeJwt("not-a-jwt"), null);
  assert.equal(decodeJwt("a.!!!.c"), null);
  assert.equal(decodeJwt(42), null);
});

function tokenSource(clock, lifetime) {
  const issued = [];
  const fn = async ({ reason }) => {
    const iat = Math.floor(clock.now() / 1000);
    const t = jwt({ sub: "alice", iat, exp: iat + lifetime, n: issued.length });
    issued.push({ reason, t, exp: iat + lifetime });
    return t;
  };
  return { issued, fn };
}

test("`auth <jwt>` goes out at 80% of the token's lifetime, on the same socket", async () => {
  const clock = fakeClock();
  const src = tokenSource(clock, 1000);
  const { WebSocket, gw } = setup({ clock, token: src.fn });
  await flush();
  const ws = WebSocket.last();
  ws.accept("new", "00000000000000aa", "n", "alice");
  assert.equal(gw.user, "alice");
  await clock.advance(799_000);
  assert.equal(src.issued.length, 1, "not before 80%");
  assert.deepEqual(ws.lines, []);
  await clock.advance(1_000);
  assert.deepEqual(
    src.issued.map((i) => i.reason),
    ["initial", "refresh"],
  );
  assert.deepEqual(ws.lines, [`auth ${src.issued[1].t}`]);
  ws.recv(`ok auth ${src.issued[1].exp}`);
  await flush();
  // The next refresh: 80% of the new token's lifetime after its iat.
  assert.equal(clock.pending().at(-1).ms, 800_000);
  await clock.advance(800_000);
  assert.equal(ws.lines.length, 2);
  assert.equal(WebSocket.sockets.length, 1, "never reconnected for a refresh");
});

test("the refresh point follows iat: a token already 50% through its life refreshes 30% later", async () => {
  const clock = fakeClock();
  const now = clock.now() / 1000;
  const t = jwt({ sub: "a", iat: now - 500, exp: now + 500 });
  let calls = 0;
  const { WebSocket } = setup({
    clock,
    token: async () => (++calls === 1 ? t : jwt({ sub: "a", iat: now, exp: now + 5000 })),
  });
  await flush();
  WebSocket.last().accept("new");
  assert.deepEqual(
    clock.pending().map((x) => x.ms),
    [300_000],
  );
});

test("a refused refresh (`err 401 auth invalid`) is reported and retried before exp; the socket stays", async () => {
  const clock = fakeClock();
  const src = tokenSource(clock, 100);
  const { WebSocket, errors } = setup({ clock, token: src.fn });
  await flush();
  const ws = WebSocket.last();
  ws.accept("new");
  await clock.advance(80_000);
  assert.equal(ws.lines.length, 1);
  ws.recv("err 401 auth invalid");
  await flush();
  assert.equal(errors.at(-1).status, 401);
  // 20 s left on the old token: the retry comes after half of it.
  assert.deepEqual(
    clock.pending().map((x) => x.ms),
    [10_000],
  );
  await clock.advance(10_000);
  assert.equal(ws.lines.length, 2);
  assert.ok(ws.lines[1].startsWith("auth "));
  assert.equal(WebSocket.sockets.length, 1);
});

test("a reconnect after the refresh point asks for a fresh token instead of reusing a stale one", async () => {
  const clock = fakeClock();
  const src = tokenSource(clock, 100);
  // random 0.5 and a 2 s first step: every reconnect below waits exactly 1 s.
  const { WebSocket } = setup({ clock, token: src.fn, minDelay: 2000 });
  await flush();
  WebSocket.last().accept("new");
  WebSocket.last().serverClose(1001); // drain: quick return, 0.5 s
  await clock.next();
  assert.deepEqual(
    src.issued.map((i) => i.reason),
    ["initial"],
    "a young token is reused",
  );
  WebSocket.last().accept("resumed");
  await clock.advance(79_000); // t = 79.5 s: the in-band refresh (at 80 s) has not run
  assert.equal(src.issued.length, 1);
  WebSocket.last().serverClose(1006); // back at 80.5 s, past the refresh point
  await clock.next();
  assert.deepEqual(
    src.issued.map((i) => i.reason),
    ["initial", "stale"],
  );
  assert.equal(WebSocket.last().url, "ws://gw.test/ws?token=" + src.issued[1].t);
});

test("a fixed token string is never refreshed", async () => {
  const clock = fakeClock();
  const now = clock.now() / 1000;
  const { WebSocket } = setup({ clock, token: jwt({ sub: "a", iat: now, exp: now + 100 }) });
  await flush();
  WebSocket.last().accept("new");
  assert.deepEqual(clock.pending(), []);
});

test("token transport: query parameter in browser mode, Authorization header in jar mode", async () => {
  const a = setup({ token: "abc.def.ghi", url: "wss://gw.test/ws?room=7" });
  await flush();
  const u = new URL(a.WebSocket.last().url);
  assert.equal(u.searchParams.get("token"), "abc.def.ghi");
  assert.equal(u.searchParams.get("room"), "7");
  assert.equal(a.WebSocket.last().init, undefined, "browser WebSockets get no second argument");

  const b = setup({ token: "abc.def.ghi", cookies: "jar" });
  await flush();
  assert.equal(b.WebSocket.last().url, "ws://gw.test/ws");
  assert.equal(b.WebSocket.last().init.headers.Authorization, "Bearer abc.def.ghi");
});
