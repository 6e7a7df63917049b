// Resume from Node, against a real gateway: run by tests/node_client.rs (not a `node --test`
// file). Node has no cookie jar (DESIGN §14): the client keeps the session cookie itself
// (`GET /ws-session`, then a `Cookie` header on every upgrade), so a connection that is cut
// must come back with `hello … resumed` and get what it missed replayed, once and in order.
//
// Node 20: run with `node --experimental-websocket` (Node >= 22 has the global WebSocket).
//
// Environment: WSGATE_URL (ws://127.0.0.1:<port>/ws), TOPIC.
// The client connects through a TCP proxy inside this script, so the test can cut its
// connection the way a network does: `cut` resets both sides of every proxied connection (RST:
// no close frame, no FIN) and holds new connections (unanswered, as a dead route) until
// `release`.
//
// Commands (stdin): cut, release, result, quit (or EOF).
// Events (stdout): `proxy <port>`, `state <state> <previous> <code> <reason>`,
// `hello new|resumed <peer> <node>`, `jar <cookie names>`, `ready <seq>`, `msg <seq> <payload>`,
// `gap <from> <to> <reason>`, `error <code> <message>`, `cut <n>`, `held <n>`, `released <n>`,
// `result <key> <value>`… `result end`, `fatal <why>`.

import net from "node:net";
import readline from "node:readline";
import { connect } from "../../wsgate.js";

const emit = (line) => process.stdout.write(String(line).replace(/[\r\n]+/g, " ") + "\n");

async function main() {
  const upstream = new URL(process.env.WSGATE_URL ?? "");
  const topic = process.env.TOPIC;
  if (upstream.protocol !== "ws:" || !topic) {
    emit("fatal WSGATE_URL (ws://host:port/path) and TOPIC must be set");
    process.exit(2);
  }
  if (typeof globalThis.WebSocket !== "function") {
    emit(`fatal no global WebSocket in Node ${process.version}: run with --experimental-websocket (Node 20) or Node >= 22`);
    process.exit(2);
  }

  // ---- the proxy
  const pairs = new Set();
  const held = [];
  let holding = false;
  const forward = (client) => {
    const up = net.connect(Number(upstream.port), upstream.hostname);
    const pair = { client, up };
    pairs.add(pair);
    client.pipe(up);
    up.pipe(client);
    const gone = () => pairs.delete(pair);
    for (const s of [client, up]) {
      s.on("close", gone);
      s.on("error", () => {
        gone();
        client.destroy();
        up.destroy();
      });
    }
  };
  const proxy = net.createServer((client) => {
    if (!holding) return forward(client);
    client.pause();
    client.on("error", () => {});
    held.push(client);
    emit(`held ${held.length}`);
  });
  await new Promise((res) => proxy.listen(0, "127.0.0.1", res));
  const port = proxy.address().port;
  emit(`proxy ${port}`);

  // ---- the client, as an application uses it
  const delivered = [];
  const states = [];
  const hellos = [];
  const gaps = [];
  const errors = [];
  const gw = connect(`ws://127.0.0.1:${port}${upstream.pathname}`, {
    onState: (state, info) => {
      states.push(state);
      emit(`state ${state} ${info.previous ?? "-"} ${info.code ?? "-"} ${info.reason || "-"}`);
    },
    onError: (e) => {
      errors.push(`${e.code}: ${e.message}`);
      emit(`error ${e.code} ${e.message}`);
    },
  });
  gw.on("hello", ({ resumed, peer, node }) => {
    hellos.push(`${resumed ? "resumed" : "new"} ${peer} ${node}`);
    emit(`hello ${resumed ? "resumed" : "new"} ${peer} ${node}`);
    // The names only: the session id is a secret and is never printed.
    emit(`jar ${[...(gw._jar?.keys() ?? [])].join(",") || "-"}`);
  });
  const handle = gw.subscribe(
    topic,
    (data, { seq }) => {
      delivered.push(`${seq}:${data}`);
      emit(`msg ${seq} ${data}`);
    },
    {
      onGap: ({ from, to, reason }) => {
        gaps.push(`${from}..${to} ${reason}`);
        emit(`gap ${from} ${to} ${reason}`);
      },
    },
  );
  handle.ready.then(
    (seq) => emit(`ready ${seq}`),
    (e) => emit(`error SUBSCRIBE ${e.message}`),
  );

  const quit = (code) => {
    gw.close();
    for (const { client, up } of pairs) {
      client.destroy();
      up.destroy();
    }
    for (const c of held) c.destroy();
    proxy.close();
    // Let the close frame go out, then leave.
    setTimeout(() => process.exit(code), 100).unref();
  };

  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const cmd = line.trim();
    if (cmd === "cut") {
      holding = true;
      const n = pairs.size;
      for (const { client, up } of [...pairs]) {
        client.resetAndDestroy();
        up.resetAndDestroy();
      }
      pairs.clear();
      emit(`cut ${n}`);
    } else if (cmd === "release") {
      holding = false;
      const n = held.length;
      for (const c of held.splice(0)) forward(c);
      emit(`released ${n}`);
    } else if (cmd === "result") {
      const r = {
        delivered: delivered.join(","),
        states: states.join(","),
        hellos: hellos.join(","),
        gaps: gaps.join(","),
        errors: errors.join(" | "),
      };
      for (const [k, v] of Object.entries(r)) emit(`result ${k} ${v === "" ? "-" : v}`);
      emit("result end");
    } else if (cmd === "quit") {
      quit(0);
    } else if (cmd) {
      emit(`fatal unknown command ${JSON.stringify(cmd)}`);
    }
  });
  rl.on("close", () => quit(0));
}

if (process.env.NODE_TEST_CONTEXT) {
  // `node --test test/` runs every script under test/: this one is not a unit test.
  const { test } = await import("node:test");
  test("e2e/resume.mjs is run by tests/node_client.rs", { skip: "an end-to-end script" }, () => {});
} else {
  await main();
}
