// Drives headless Chromium with puppeteer-core for tests/browser_client.rs (not a `node --test`
// file: the Rust test runs it). Talks in lines: commands on stdin, events on stdout.
//
// Environment: CHROMIUM (the browser binary), PUPPETEER_DIR (where the pinned puppeteer-core of
// package-lock.json beside this file was installed with `npm ci`).
//
// Commands:
//   open <url>                      load the stream page; its reports come out as `page <line>`
//   result                          `result <key> <value>` for each key of window.result(), then `result end`
//   demo <url-a> <url-b> <png>      two users (separate browser contexts: separate cookie jars) chat on
//                                   the demo page; a screenshot of the first is written to <png>;
//                                   answers `demo ok` or `demo fail <why>`
//   tab <name> <context> <url>      opens <url> (e.g. tab.html) in a new page of the browser context
//                                   <context> (made on first use: pages of one context share a
//                                   cookie jar, like tabs of one browser; separate contexts do not);
//                                   its reports come out as `tab <name> <line>`; answers
//                                   `tabopened <name>`
//   tabs <prefix> <n> <url>         n pages <prefix>0..<prefix>(n-1), each in a context of its own,
//                                   opened a few at a time; answers `tabsopened <prefix> <n>`
//   result <name>                   as `result`, for the page of `tab`/`tabs` named <name>
//   quit                            closes the browser and exits (so does EOF on stdin)
// Events: `launched <version>`, `opened`, `page …`, `tabopened …`, `tabsopened …`, `tab …`,
// `pageerror …`, `fatal …`.

import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const emit = (line) => process.stdout.write(String(line).replace(/[\r\n]+/g, " ") + "\n");
const log = (line) => process.stderr.write(String(line) + "\n");

let browser = null;
let page = null;
const tabs = new Map(); // name -> Page
const TABS_AT_ONCE = 3;
const contexts = new Map(); // name -> BrowserContext (promise)

async function launch() {
  const dir = process.env.PUPPETEER_DIR;
  const chromium = process.env.CHROMIUM;
  if (!dir || !chromium) {
    emit("fatal CHROMIUM and PUPPETEER_DIR must be set");
    process.exit(2);
  }
  const require = createRequire(path.join(dir, "driver-anchor.js"));
  const puppeteer = require("puppeteer-core");
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    // The DevTools connection is a pipe: should this process die, Chromium sees EOF and exits.
    pipe: true,
    args: [
      "--no-sandbox", // root in a container: Chromium's sandbox needs user namespaces
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-component-update",
    ],
    timeout: 30_000,
    protocolTimeout: 30_000,
  });
  emit(`launched ${await browser.version()}`);
}

function watch(p, tag) {
  p.on("console", (m) => log(`[${tag} console.${m.type()}] ${m.text()}`));
  p.on("pageerror", (e) => emit(`pageerror ${tag} ${e?.message ?? e}`));
  p.on("requestfailed", (r) => log(`[${tag} request failed] ${r.url()} ${r.failure()?.errorText ?? ""}`));
}

async function open(url) {
  page = await browser.newPage();
  watch(page, "stream");
  await page.exposeFunction("report", (line) => emit(`page ${line}`));
  const res = await page.goto(url, { waitUntil: "load", timeout: 15_000 });
  if (!res || !res.ok()) throw new Error(`GET ${url}: ${res ? res.status() : "no response"}`);
  emit("opened");
}

function context(name) {
  if (!contexts.has(name)) contexts.set(name, browser.createBrowserContext());
  return contexts.get(name);
}

async function openTab(name, ctxName, url) {
  if (tabs.has(name)) throw new Error(`tab ${name} is already open`);
  tabs.set(name, null);
  const ctx = await context(ctxName);
  const p = await ctx.newPage();
  tabs.set(name, p);
  watch(p, name);
  await p.exposeFunction("report", (line) => emit(`tab ${name} ${line}`));
  const res = await p.goto(url, { waitUntil: "load", timeout: 30_000 });
  if (!res || !res.ok()) throw new Error(`GET ${url}: ${res ? res.status() : "no response"}`);
}

async function result(name) {
  const p = name === undefined ? page : tabs.get(name);
  if (!p) throw new Error(`no page ${name ?? "(open first)"}`);
  const r = await p.evaluate(() => window.result());
  for (const [k, v] of Object.entries(r)) emit(`result ${k} ${v === "" ? "-" : v}`);
  emit("result end");
}

async function demo(urlA, urlB, png) {
  const contexts = [];
  const users = [];
  let step = "start";
  try {
    for (const [who, url] of [["a", urlA], ["b", urlB]]) {
      step = `open ${who}`;
      const ctx = await browser.createBrowserContext();
      contexts.push(ctx);
      const p = await ctx.newPage();
      watch(p, `demo-${who}`);
      await p.setViewport({ width: 900, height: 560 });
      const res = await p.goto(url, { waitUntil: "load", timeout: 15_000 });
      if (!res || !res.ok()) throw new Error(`GET ${url}: ${res ? res.status() : "no response"}`);
      await p.waitForFunction(() => document.getElementById("state").textContent === "open", { timeout: 15_000 });
      users.push(p);
    }
    const [a, b] = users;
    // Presence: each sees the other (a through `join`, b through `who`).
    step = "presence";
    for (const p of [a, b]) {
      await p.waitForFunction(() => document.querySelectorAll("#who li").length === 2, { timeout: 10_000 });
    }
    step = "b says hi";
    await b.type("#text", "hi alice, the client reconnects and resumes by itself");
    await b.click("form button");
    await a.waitForFunction(() => document.getElementById("log").textContent.includes("hi alice"), { timeout: 10_000 });
    step = "a says hello";
    await a.type("#text", "hello bob!");
    await a.click("form button");
    for (const p of [a, b]) {
      await p.waitForFunction(() => document.getElementById("log").textContent.includes("hello bob!"), { timeout: 10_000 });
    }
    // Names are learnt from messages: both lists now show both names.
    step = "names";
    await a.waitForFunction(() => /bob/.test(document.getElementById("who").textContent), { timeout: 10_000 });
    await a.screenshot({ path: png });
    emit("demo ok");
  } catch (e) {
    const seen = [];
    for (const p of users) {
      seen.push(
        await p
          .evaluate(() => ["state", "who", "log"].map((id) => `${id}=[${document.getElementById(id).innerText.replace(/\n/g, " / ")}]`).join(" "))
          .catch((err) => `(page unreadable: ${err.message})`),
      );
    }
    emit(`demo fail at ${step}: ${e?.message ?? e}; pages: ${seen.join(" || ")}`);
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
  }
}

let closing = false;
async function quit(code) {
  if (closing) return;
  closing = true;
  await browser?.close().catch(() => {});
  process.exit(code);
}

function serve() {
  const rl = readline.createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    const [cmd, ...args] = line.trim().split(/\s+/);
    chain = chain.then(async () => {
      try {
        if (cmd === "open") await open(args[0]);
        else if (cmd === "result") await result(args[0]);
        else if (cmd === "tab") {
          await openTab(args[0], args[1], args[2]);
          emit(`tabopened ${args[0]}`);
        } else if (cmd === "tabs") {
          const n = Number(args[1]);
          const names = Array.from({ length: n }, (_, i) => `${args[0]}${i}`);
          // A few at a time: a new context is a new renderer process, and twenty at once keep a
          // small machine's CPUs so busy that the balancer's health checks time out.
          const queue = [...names];
          const worker = async () => {
            for (let name = queue.shift(); name !== undefined; name = queue.shift()) await openTab(name, name, args[2]);
          };
          await Promise.all(Array.from({ length: Math.min(TABS_AT_ONCE, n) }, worker));
          emit(`tabsopened ${args[0]} ${n}`);
        } else if (cmd === "demo") await demo(args[0], args[1], args[2]);
        else if (cmd === "quit") await quit(0);
        else if (cmd) emit(`fatal unknown command ${JSON.stringify(line)}`);
      } catch (e) {
        emit(`fatal ${cmd}: ${e?.stack ?? e}`);
        await quit(1);
      }
    });
  });
  rl.on("close", () => {
    chain = chain.then(() => quit(0));
  });
}

if (process.env.NODE_TEST_CONTEXT) {
  // `node --test test/` runs every script under test/: this one is not a unit test.
  const { test } = await import("node:test");
  test("browser/driver.mjs is run by tests/browser_client.rs", { skip: "an end-to-end driver" }, () => {});
} else {
  await launch();
  serve();
}
