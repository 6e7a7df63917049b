import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay } from "../wsgate.js";
import { setup, flush } from "./fakes.js";

test("backoffDelay: the envelope doubles from 250 ms and is capped at 10 s", () => {
  const top = () => 0.999999;
  const got = [0, 1, 2, 3, 4, 5, 6, 7, 12, 60, 5000].map((a) => backoffDelay(a, top));
  assert.deepEqual(got, [249, 499, 999, 1999, 3999, 7999, 9999, 9999, 9999, 9999, 9999]);
  assert.equal(backoffDelay(3, () => 0), 0);
  assert.equal(backoffDelay(0, () => 0.5), 125);
});

test("backoffDelay: full jitter, uniform over [0, envelope) with real randomness", () => {
  for (const [attempt, envelope] of [
    [0, 250],
    [3, 2000],
    [10, 10000],
  ]) {
    const samples = Array.from({ length: 4000 }, () => backoffDelay(attempt, Math.random));
    assert.ok(samples.every((d) => Number.isInteger(d) && d >= 0 && d < envelope), `within [0, ${envelope})`);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    assert.ok(Math.abs(mean - envelope / 2) < envelope * 0.05, `mean ${mean} near ${envelope / 2}`);
    // Spread over the whole range, not bunched: each quarter gets a fair share.
    for (let q = 0; q < 4; q++) {
      const n = samples.filter((d) => d >= (q * envelope) / 4 && d < ((q + 1) * envelope) / 4).length;
      assert.ok(n > 800 && n < 1200, `quarter ${q} has ${n} of 4000`);
    }
  }
});

test("reconnects after failures with growing delays, capped at 10 s", async () => {
  const { clock, WebSocket } = setup({ random: () => 0.5 });
  await flush();
  const delays = [];
  for (let i = 0; i < 9; i++) {
    assert.equal(WebSocket.sockets.length, i + 1, "one socket per attempt");
    WebSocket.last().fail();
    delays.push(await clock.next());
  }
  assert.deepEqual(delays, [125, 250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
  assert.equal(WebSocket.sockets.length, 10);
});

async function growAndDrop(openFor) {
  const { clock, WebSocket } = setup({ random: () => 0.5 });
  await flush();
  for (let i = 0; i < 4; i++) {
    WebSocket.last().fail();
    await clock.next(); // 125, 250, 500, 1000
  }
  WebSocket.last().accept("new");
  await clock.advance(openFor);
  WebSocket.last().serverClose(1006);
  return clock.pending().map((t) => t.ms);
}

test("a connection stable for a minute resets the backoff; a shorter one does not", async () => {
  // 4 failures: the next envelope is 250 * 2^4 = 4000 (0.5 -> 2000) unless reset.
  assert.deepEqual(await growAndDrop(60_000), [125]);
  assert.deepEqual(await growAndDrop(59_000), [2000]);
});
