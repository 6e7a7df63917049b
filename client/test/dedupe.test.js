import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, flush } from "./fakes.js";

async function subscribed(topic = "room", first = 0) {
  const ctx = setup();
  const got = [];
  const gaps = [];
  const h = ctx.gw.subscribe(topic, (data, meta) => got.push([meta.seq, data]), { onGap: (g) => gaps.push(g) });
  await flush();
  const ws = ctx.WebSocket.last();
  ws.accept("new");
  assert.deepEqual(ws.lines, [`sub ${topic}`]);
  ws.recv(`ok sub ${topic} ${first}`);
  return { ...ctx, ws, got, gaps, h };
}

test("each seq is delivered once, in order; duplicates and older seqs are dropped", async () => {
  const { ws, got } = await subscribed();
  for (const seq of [1, 2, 2, 1, 3, 3, 2, 4]) ws.recv(`msg room ${seq} m${seq}`);
  assert.deepEqual(got, [
    [1, "m1"],
    [2, "m2"],
    [3, "m3"],
    [4, "m4"],
  ]);
});

test("the seq from `ok sub` is the baseline: what came before it is not delivered", async () => {
  const { ws, got, h } = await subscribed("room", 5);
  assert.equal(await h.ready, 5);
  ws.recv("msg room 5 old");
  ws.recv("msg room 6 new");
  assert.deepEqual(got, [[6, "new"]]);
});

test("dedupe is per topic", async () => {
  const { gw, ws, got } = await subscribed("a");
  const other = [];
  gw.subscribe("b", (d, m) => other.push(m.seq));
  ws.recv("ok sub b 0");
  ws.recv("msg a 1 x");
  ws.recv("msg b 1 y");
  ws.recv("msg b 2 y");
  ws.recv("msg a 2 x");
  ws.recv("msg b 1 y");
  assert.deepEqual(
    got.map(([s]) => s),
    [1, 2],
  );
  assert.deepEqual(other, [1, 2]);
});

test("payload parsing: spaces kept, empty payloads, binary stays binary", async () => {
  const { ws, got } = await subscribed();
  ws.recv("msg room 1 hello  world ");
  ws.recv("msg room 2 ");
  ws.recvBinary("msg room 3", new Uint8Array([0, 255, 10, 7]));
  assert.deepEqual(got[0], [1, "hello  world "]);
  assert.deepEqual(got[1], [2, ""]);
  assert.equal(got[2][0], 3);
  assert.ok(got[2][1] instanceof Uint8Array);
  assert.deepEqual([...got[2][1]], [0, 255, 10, 7]);
});

test("a resumed replay that overlaps what was delivered is trimmed (kill -9 replay)", async () => {
  const { ws, got, clock, WebSocket } = await subscribed();
  for (const seq of [1, 2, 3]) ws.recv(`msg room ${seq} m`);
  ws.serverClose(1006);
  await clock.next();
  const ws2 = WebSocket.last();
  ws2.accept("resumed");
  for (const seq of [2, 3, 4, 5]) ws2.recv(`msg room ${seq} m`);
  assert.deepEqual(
    got.map(([s]) => s),
    [1, 2, 3, 4, 5],
  );
});

test("`gap` lines reach onGap and later seqs flow", async () => {
  const { gw, ws, got, gaps } = await subscribed();
  const all = [];
  gw.on("gap", (g) => all.push(g));
  ws.recv("msg room 1 a");
  ws.recv("gap room 2 9");
  ws.recv("msg room 10 b");
  assert.deepEqual(gaps, [{ topic: "room", from: 2, to: 9, reason: "history" }]);
  assert.deepEqual(all, gaps);
  assert.deepEqual(
    got.map(([s]) => s),
    [1, 10],
  );
});

test("two handles on one topic share one `sub`; the last unsubscribe sends `unsub`", async () => {
  const { gw, ws, got, h } = await subscribed();
  const second = [];
  const h2 = gw.subscribe("room", (d, m) => second.push(m.seq));
  assert.equal(await h2.ready, 0, "already confirmed: ready at once");
  assert.deepEqual(ws.lines, ["sub room"]);
  ws.recv("msg room 1 x");
  h.unsubscribe();
  assert.deepEqual(ws.lines, ["sub room"], "another handle still wants it");
  ws.recv("msg room 2 x");
  h2.unsubscribe();
  assert.deepEqual(ws.lines, ["sub room", "unsub room"]);
  ws.recv("msg room 3 x");
  assert.deepEqual(
    got.map(([s]) => s),
    [1],
  );
  assert.deepEqual(second, [1, 2]);
  assert.equal(await h.ready, 0, "ready had resolved before the unsubscribe");
});

test("presence lines reach onJoin/onLeave, with and without a user", async () => {
  const ctx = setup();
  const ev = [];
  ctx.gw.subscribe("room", () => {}, { onJoin: (e) => ev.push(["join", e]), onLeave: (e) => ev.push(["leave", e]) });
  await flush();
  const ws = ctx.WebSocket.last();
  ws.accept("new");
  ws.recv("join room 00000000000000bb bob");
  ws.recv("leave room 00000000000000cc");
  assert.deepEqual(ev, [
    ["join", { topic: "room", peer: "00000000000000bb", user: "bob" }],
    ["leave", { topic: "room", peer: "00000000000000cc" }],
  ]);
});

test("a jump in seq the gateway did not report is reported as a gap", async () => {
  const { ws, got, gaps } = await subscribed();
  ws.recv("msg room 1 a");
  ws.recv("msg room 2 b");
  ws.recv("msg room 5 e");
  ws.recv("msg room 6 f");
  assert.deepEqual(
    got.map(([s]) => s),
    [1, 2, 5, 6],
  );
  assert.equal(gaps.length, 1);
  assert.deepEqual([gaps[0].from, gaps[0].to, gaps[0].reason], [3, 4, "missed"]);
  // A reported gap moves the baseline: no second report for it.
  ws.recv("gap room 7 9");
  ws.recv("msg room 10 j");
  assert.equal(gaps.length, 2);
  assert.deepEqual([gaps[1].from, gaps[1].to, gaps[1].reason], [7, 9, "history"]);
});
