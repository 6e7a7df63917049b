import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, flush } from "./fakes.js";

async function open(options) {
  const ctx = setup(options);
  await flush();
  const ws = ctx.WebSocket.last();
  ws.accept("new");
  return { ...ctx, ws };
}

test("publish resolves with the seq of its own `ok pub`, even when answers cross", async () => {
  const { gw, ws } = await open();
  const a = gw.publish("a", "x");
  const b = gw.publish("b", "y");
  const a2 = gw.publish("a", "z");
  assert.deepEqual(ws.lines, ["pub a x", "pub b y", "pub a z"]);
  ws.recv("ok pub b 40"); // topics live on different cores: answers may come in any order
  ws.recv("ok pub a 7");
  ws.recv("ok pub a 8");
  assert.deepEqual(await Promise.all([a, b, a2]), [7, 40, 8]);
});

test("binary publish: header line, \\n, raw bytes", async () => {
  const { gw, ws } = await open();
  const p = gw.publish("bin", new Uint8Array([1, 2, 10, 255]));
  const frame = ws.sent.at(-1);
  assert.ok(frame instanceof Uint8Array);
  assert.deepEqual([...frame], [...new TextEncoder().encode("pub bin\n"), 1, 2, 10, 255]);
  ws.recv("ok pub bin 1");
  assert.equal(await p, 1);
});

test("who resolves with members (users split off), and the count alone above the presence cap", async () => {
  const { gw, ws } = await open();
  const w1 = gw.who("room");
  const w2 = gw.who("big");
  ws.recv("members big 5000");
  ws.recv("members room 2 00000000000000aa 00000000000000bb:bob@x:y");
  assert.deepEqual(await w1, {
    topic: "room",
    count: 2,
    members: [{ peer: "00000000000000aa" }, { peer: "00000000000000bb", user: "bob@x:y" }],
    complete: true,
  });
  assert.deepEqual(await w2, { topic: "big", count: 5000, members: [], complete: false });
});

test("send resolves with the backend's reply; binary stays binary", async () => {
  const { gw, ws } = await open();
  const t = gw.send("hello there");
  const b = gw.send(new Uint8Array([0, 1]).buffer);
  assert.equal(ws.sent[0], "send hello there");
  assert.deepEqual([...ws.sent[1]], [...new TextEncoder().encode("send\n"), 0, 1]);
  ws.recv("reply got it");
  ws.recvBinary("reply", new Uint8Array([9, 8, 7]));
  assert.equal(await t, "got it");
  const bin = await b;
  assert.ok(bin instanceof Uint8Array);
  assert.deepEqual([...bin], [9, 8, 7]);
});

test("direct messages reach on('direct'), text and binary", async () => {
  const { gw, ws } = await open();
  const got = [];
  const off = gw.on("direct", (data, meta) => got.push([data, meta.binary]));
  ws.recv("direct hi there");
  ws.recvBinary("direct", new Uint8Array([5]));
  off();
  ws.recv("direct ignored");
  assert.equal(got.length, 2);
  assert.deepEqual(got[0], ["hi there", false]);
  assert.deepEqual([...got[1][0]], [5]);
  assert.equal(got[1][1], true);
});

test("err 403 rejects the matching call only", async () => {
  const { gw, ws } = await open();
  const pa = gw.publish("a", "x");
  const pb = gw.publish("b", "x");
  const wa = gw.who("a");
  ws.recv("err 403 pub b forbidden");
  ws.recv("err 403 who a forbidden");
  ws.recv("ok pub a 3");
  await assert.rejects(pb, (e) => e.code === "FORBIDDEN" && e.status === 403 && /pub b forbidden/.test(e.message));
  await assert.rejects(wa, { code: "FORBIDDEN" });
  assert.equal(await pa, 3);
});

test("a forbidden or revoked subscription ends its handles with an error", async () => {
  const { gw, ws } = await open();
  const errs = [];
  const got = [];
  const h1 = gw.subscribe("secret", () => got.push("secret"), { onError: (e) => errs.push(e.code) });
  const h2 = gw.subscribe("room", () => got.push("room"), { onError: (e) => errs.push(e.code) });
  ws.recv("err 403 sub secret forbidden");
  await assert.rejects(h1.ready, { code: "FORBIDDEN" });
  assert.equal(h1.active, false);
  ws.recv("ok sub room 0");
  ws.recv("msg room 1 x");
  ws.recv("ok auth 1999999999");
  ws.recv("err 403 sub room revoked");
  ws.recv("msg room 2 x");
  assert.deepEqual(errs, ["FORBIDDEN", "REVOKED"]);
  assert.deepEqual(got, ["room"]);
  assert.equal(h2.active, false);
  // Subscribing again is a fresh `sub` (the gateway dropped the old one).
  gw.subscribe("room", () => {});
  assert.equal(ws.lines.at(-1), "sub room");
});

test("send errors: backend failure, busy, and a gateway without send (`unknown command`)", async () => {
  const { gw, ws } = await open();
  const p = gw.publish("t", "x");
  const s1 = gw.send("a");
  const s2 = gw.send("b");
  const s3 = gw.send("c");
  ws.recv("err 502 send failed");
  ws.recv("err 503 busy");
  ws.recv("err 400 unknown command");
  await assert.rejects(s1, (e) => e.code === "GATEWAY" && e.status === 502);
  await assert.rejects(s2, (e) => e.code === "GATEWAY" && e.status === 503);
  await assert.rejects(s3, (e) => e.code === "UNSUPPORTED" && e.status === 400);
  ws.recv("ok pub t 1");
  assert.equal(await p, 1, "the publish was not blamed");
});

test("an err line naming no command rejects the oldest call in flight", async () => {
  const { gw, ws } = await open();
  const w = gw.who("t");
  ws.recv("err 422 invalid topic");
  await assert.rejects(w, (e) => e.status === 422 && e.text === "invalid topic");
});

test("an exception in an application callback is reported, delivery goes on", async () => {
  const { gw, ws, errors } = await open();
  const got = [];
  gw.subscribe("t", (d, m) => {
    if (m.seq === 1) throw new Error("app bug");
    got.push(m.seq);
  });
  ws.recv("ok sub t 0");
  ws.recv("msg t 1 x");
  ws.recv("msg t 2 x");
  assert.deepEqual(got, [2]);
  assert.equal(errors.at(-1).code, "CALLBACK");
  assert.match(errors.at(-1).message, /app bug/);
});
