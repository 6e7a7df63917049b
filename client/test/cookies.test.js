import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, flush } from "./fakes.js";

const ID = "0b9d6f0e-3c2a-4f7e-9a51-2d4c8b6e1f00";

function fakeFetch(responses) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, cookie: init?.headers?.Cookie });
    const setCookies = responses.shift() ?? [];
    const headers = new Headers();
    for (const c of setCookies) headers.append("set-cookie", c);
    return { status: 204, headers, body: null };
  };
  return { fetch, calls };
}

test("jar mode: GET /ws-session first, then the cookie rides on every upgrade", async () => {
  const f = fakeFetch([
    [`WS_SESSION_ID=${ID}; Path=/; Max-Age=86400; HttpOnly`, "AWSALBAPP-0=abc; Path=/"],
    [`WS_SESSION_ID=${ID}; Path=/; Max-Age=86400; HttpOnly`, "AWSALBAPP-0=def; Path=/"],
  ]);
  const { WebSocket, clock, gw } = setup({ cookies: "jar", fetch: f.fetch, url: "wss://gw.test/ws" });
  await flush();
  assert.deepEqual(f.calls, [{ url: "https://gw.test/ws-session", cookie: undefined }]);
  const ws1 = WebSocket.last();
  assert.equal(ws1.init.headers.Cookie, `WS_SESSION_ID=${ID}; AWSALBAPP-0=abc`);
  ws1.accept("new");
  ws1.serverClose(1006);
  await clock.next();
  // The reconnect presents the cookie to /ws-session (balancer cookies refresh) and to the upgrade.
  assert.equal(f.calls[1].cookie, `WS_SESSION_ID=${ID}; AWSALBAPP-0=abc`);
  const ws2 = WebSocket.last();
  assert.equal(ws2.init.headers.Cookie, `WS_SESSION_ID=${ID}; AWSALBAPP-0=def`);
  ws2.accept("resumed");
  assert.equal(gw.resumed, true);
});

test("jar mode: an unreachable /ws-session does not stop the upgrade", async () => {
  const { WebSocket } = setup({
    cookies: "jar",
    fetch: async () => {
      throw new TypeError("fetch failed");
    },
  });
  await flush();
  assert.equal(WebSocket.sockets.length, 1);
  assert.equal(WebSocket.last().init, undefined, "no cookie, no token: plain constructor call");
});

test("browser mode never fetches /ws-session (the browser keeps its own cookies)", async () => {
  const f = fakeFetch([]);
  const { WebSocket } = setup({ cookies: "browser", fetch: f.fetch });
  await flush();
  assert.equal(f.calls.length, 0);
  assert.equal(WebSocket.sockets.length, 1);
});
