import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, flush } from "./fakes.js";

test("calls made before the first hello are sent after it, subscriptions first", async () => {
  const { gw, WebSocket } = setup();
  const p1 = gw.publish("room", "one");
  gw.subscribe("room", () => {});
  const p2 = gw.publish("room", "two");
  await flush();
  const ws = WebSocket.last();
  ws.open();
  const p3 = gw.publish("room", "three"); // socket open, no hello yet: still queued
  assert.deepEqual(ws.sent, [], "nothing before hello");
  ws.recv("hello 00000000000000aa new n1");
  assert.deepEqual(ws.lines, ["sub room", "pub room one", "pub room two", "pub room three"]);
  ws.recv("ok sub room 0");
  ws.recv("ok pub room 1");
  ws.recv("ok pub room 2");
  ws.recv("ok pub room 3");
  assert.deepEqual(await Promise.all([p1, p2, p3]), [1, 2, 3]);
});

test("calls made while reconnecting are queued and sent after the next hello", async () => {
  const { gw, WebSocket, clock } = setup();
  await flush();
  WebSocket.last().accept("new");
  WebSocket.last().serverClose(1006);
  assert.equal(gw.state, "reconnecting");
  const p = gw.publish("t", "queued");
  const w = gw.who("t");
  await clock.next();
  const ws2 = WebSocket.last();
  ws2.open();
  assert.deepEqual(ws2.sent, []);
  ws2.recv("hello 00000000000000aa resumed n1");
  assert.deepEqual(ws2.lines, ["pub t queued", "who t"]);
  ws2.recv("ok pub t 9");
  ws2.recv("members t 1 00000000000000aa");
  assert.equal(await p, 9);
  assert.deepEqual(await w, { topic: "t", count: 1, members: [{ peer: "00000000000000aa" }], complete: true });
});

test("the queue is bounded: overflow rejects that call with a clear error, the others survive", async () => {
  const { gw, WebSocket } = setup({ maxQueue: 3 });
  const ok = [gw.publish("t", "1"), gw.publish("t", "2"), gw.send("3")];
  const fourth = gw.publish("t", "4");
  const err = await Promise.race([fourth.then(() => "resolved", (e) => e), flush().then(() => "still pending")]);
  assert.ok(err instanceof Error, `the 4th call is refused at once (got: ${err})`);
  assert.equal(err.code, "QUEUE_FULL");
  assert.match(err.message, /3 calls are already queued .*maxQueue 3/);
  await flush();
  const ws = WebSocket.last();
  ws.accept("new");
  assert.deepEqual(ws.lines, ["pub t 1", "pub t 2", "send 3"]);
  ws.recv("ok pub t 1");
  ws.recv("ok pub t 2");
  ws.recv("reply r");
  assert.deepEqual(await Promise.all(ok), [1, 2, "r"]);
});

test("in flight at a drop: who is asked again, publish/send fail as 'may or may not have been applied'", async () => {
  const { gw, WebSocket, clock } = setup();
  await flush();
  const ws = WebSocket.last();
  ws.accept("new");
  const p = gw.publish("t", "x");
  const s = gw.send("y");
  const w = gw.who("t");
  ws.serverClose(1006);
  const [pe, se] = await Promise.all([p.catch((e) => e), s.catch((e) => e)]);
  assert.equal(pe.code, "CONNECTION_LOST");
  assert.match(pe.message, /publish|pub t/);
  assert.equal(se.code, "CONNECTION_LOST");
  await clock.next();
  const ws2 = WebSocket.last();
  ws2.accept("resumed");
  assert.deepEqual(ws2.lines, ["who t"]);
  ws2.recv("members t 0");
  assert.equal((await w).count, 0);
});

test("close() rejects what waits, and later calls reject at once", async () => {
  const { gw, WebSocket } = setup();
  const p = gw.publish("t", "x");
  const h = gw.subscribe("t", () => {});
  await flush();
  const ws = WebSocket.last();
  gw.close();
  assert.equal(gw.state, "closed");
  await assert.rejects(p, { code: "CLOSED" });
  await assert.rejects(h.ready, { code: "CLOSED" });
  await assert.rejects(gw.who("t"), { code: "CLOSED" });
  assert.throws(() => gw.subscribe("t", () => {}), { code: "CLOSED" });
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "client closed" });
});

test("invalid topics and payloads are refused locally, nothing is sent", async () => {
  const { gw, WebSocket } = setup();
  await flush();
  const ws = WebSocket.last();
  ws.accept("new");
  await assert.rejects(gw.publish("bad topic", "x"), TypeError);
  await assert.rejects(gw.publish("x".repeat(129), "x"), TypeError);
  await assert.rejects(gw.who("é"), TypeError);
  await assert.rejects(gw.publish("ok", { not: "bytes" }), TypeError);
  assert.throws(() => gw.subscribe("a/b", () => {}), TypeError);
  assert.deepEqual(ws.sent, []);
});
