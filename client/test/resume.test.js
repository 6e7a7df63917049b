import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, flush } from "./fakes.js";

async function live(topics = ["room"]) {
  const ctx = setup();
  const got = {};
  const gaps = [];
  const handles = {};
  for (const t of topics) {
    got[t] = [];
    handles[t] = ctx.gw.subscribe(t, (d, m) => got[t].push(m.seq), { onGap: (g) => gaps.push(g) });
  }
  await flush();
  const ws = ctx.WebSocket.last();
  ws.accept("new");
  for (const t of topics) ws.recv(`ok sub ${t} 0`);
  return { ...ctx, ws, got, gaps, handles };
}

async function drop(ctx, code = 1006) {
  ctx.WebSocket.last().serverClose(code);
  await ctx.clock.next();
  return ctx.WebSocket.last();
}

test("after `hello … resumed` nothing is re-sent", async () => {
  const ctx = await live(["a", "b"]);
  ctx.ws.recv("msg a 1 x");
  const ws2 = await drop(ctx);
  assert.notEqual(ws2, ctx.ws);
  ws2.accept("resumed");
  assert.deepEqual(ws2.sent, []);
  assert.deepEqual(ctx.gaps, []);
  ws2.recv("msg a 2 x");
  assert.deepEqual(ctx.got.a, [1, 2]);
});

test("after `hello … new` every live handle is subscribed again and a gap is reported", async () => {
  const ctx = await live(["a", "b", "c"]);
  ctx.ws.recv("msg a 1 x");
  ctx.ws.recv("msg a 2 x");
  ctx.ws.recv("msg b 1 x");
  ctx.handles.c.unsubscribe();
  const ws2 = await drop(ctx);
  ws2.accept("new");
  assert.deepEqual(ws2.lines.sort(), ["sub a", "sub b"]);
  // a was at 2, the topic is now at 7: 3..7 were published while the session was lost.
  ws2.recv("ok sub a 7");
  // b was at 1 and nothing was published meanwhile: an empty range, the session is still new.
  ws2.recv("ok sub b 1");
  assert.deepEqual(ctx.gaps, [
    { topic: "a", from: 3, to: 7, reason: "new-session" },
    { topic: "b", from: 2, to: 1, reason: "new-session" },
  ]);
  ws2.recv("msg a 7 x");
  ws2.recv("msg a 8 x");
  assert.deepEqual(ctx.got.a, [1, 2, 8]);
});

test("numbering that went backwards (a forgotten topic) resets the dedupe baseline", async () => {
  const ctx = await live();
  for (let s = 1; s <= 10; s++) ctx.ws.recv(`msg room ${s} x`);
  const ws2 = await drop(ctx);
  ws2.accept("new");
  // A live message races the `ok sub`: held until the answer says where numbering is.
  ws2.recv("msg room 3 x");
  ws2.recv("ok sub room 2");
  ws2.recv("msg room 4 x");
  assert.deepEqual(ctx.gaps, [{ topic: "room", from: 1, to: 2, reason: "reset" }]);
  assert.deepEqual(ctx.got.room.slice(10), [3, 4]);
});

test("a `sub` still unanswered when the socket dropped is sent again on resume", async () => {
  const ctx = await live(["a"]);
  ctx.gw.subscribe("b", () => {});
  assert.deepEqual(ctx.ws.lines, ["sub a", "sub b"]);
  const ws2 = await drop(ctx);
  ws2.accept("resumed");
  assert.deepEqual(ws2.lines, ["sub b"]);
});

test("subscribe / unsubscribe while disconnected are applied after resume", async () => {
  const ctx = await live(["a"]);
  ctx.ws.serverClose(1006);
  ctx.handles.a.unsubscribe();
  const h = ctx.gw.subscribe("z", () => {});
  await ctx.clock.next();
  const ws2 = ctx.WebSocket.last();
  ws2.accept("resumed");
  assert.deepEqual(ws2.lines.sort(), ["sub z", "unsub a"]);
  ws2.recv("ok sub z 4");
  assert.equal(await h.ready, 4);
});

test("a resumed session's messages for topics nobody here wants are unsubscribed once", async () => {
  const ctx = setup();
  await flush();
  const ws = ctx.WebSocket.last();
  ws.accept("resumed"); // e.g. a page reload that resumed the previous page's session
  ws.recv("msg old 5 x");
  ws.recv("msg old 6 x");
  assert.deepEqual(ws.lines, ["unsub old"]);
});
