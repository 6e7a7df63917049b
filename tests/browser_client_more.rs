//! More of the JavaScript client in a real browser (DESIGN §14, issue 17),
//! with the machinery of `tests/browser_client.rs`: headless Chromium driven
//! by `client/test/browser/driver.mjs`, pages served from a second loopback
//! origin by the test's static server, gateways behind HAProxy (the ALB
//! stand-in of `tests/edge/`). The page is `client/test/browser/tab.html`:
//! one client subscribed to one topic, recording and timing every socket,
//! state, `hello`, reconnect, gap, message, token call and refresh.
//!
//! * **Twenty tabs drained at once come back spread out.** Twenty pages, each
//!   in its own browser context (own cookie jar, own session), all connect to
//!   one node of a three-node fleet with Redis (the other two are out of
//!   rotation meanwhile); that node is then drained as in a rolling deploy
//!   (`maint`, then SIGTERM: close 1001). Each page measures, with
//!   `performance.now()`, how long after its own close its client made the
//!   new socket and how long until that socket opened. The client waits a
//!   uniform delay in `[0, drainDelay)` = `[0, 1000)` ms after a 1001: both
//!   sets of twenty must span at least 40 % of that window, fall in at least
//!   three of its four quarters, and no more than five may share a 10 ms
//!   bucket (lockstep puts them all within a few ms of each other). The
//!   first set is the client's alone; the second adds the balancer's and
//!   the gateway's latency (up to 2 s on a busy 2-CPU machine), which can
//!   spread returns that the client made in lockstep, so it is the first
//!   that catches lockstep for sure. Every page resumes (same peer id) on
//!   another node. Attempts the balancer refuses (its 200 ms health checks
//!   time out while Chromium starts twenty renderers on two CPUs) are
//!   tolerated and counted: they are not the client's doing.
//! * **`1008 "replaced"` leaves the old tab closed.** Two pages in ONE context
//!   (a shared cookie jar, as two tabs of a browser): the second takes the
//!   session over, the first gets close 1008 "replaced", goes `closed` with
//!   `REPLACED`, and makes no new socket for 3 s, while the second stays open
//!   and gets what is published.
//! * **`hello … new` after the session TTL re-subscribes by itself.** One node
//!   with `--session-ttl 2s` behind HAProxy; the page's connection is cut at
//!   the balancer (server in `maint`, `shutdown sessions`) and kept away (the
//!   balancer answers 503) until the gateway has ended the session; back in
//!   rotation, the page gets `hello … new`, subscribes again by itself and
//!   reports the messages published while it was away as a gap with reason
//!   `new-session`; a message published after that arrives.
//! * **A token refreshed in band** (feature `auth`): one node with
//!   `--jwt-secret-file` and `--jwt-leeway 0s`; the page's token function
//!   hands out a 6 s token, then a long one. At ~80 % of the first one's life
//!   the client sends `auth <jwt>` and gets `ok auth <exp>` (its "auth"
//!   event); the socket never closes, and a message published after the first
//!   token's `exp` still arrives.
//!
//! The four tests take a lock so they run one at a time (each drives a
//! browser; timings are measured). `WSGATE_SKIP_BROWSER=1` skips them;
//! `WSGATE_CLIENT_DIR=<copy of client/>` runs them against a copy.

mod client;
mod common;
mod edge;
mod gw;
mod redis;

#[cfg(feature = "auth")]
mod auth;

use client::*;
use common::{Driver, Gateway};
use redis::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Wait for one expected event of a page.
const WAIT: Duration = Duration::from_secs(15);
const PAGE: &str = "test/browser/tab.html";

/// One browser test at a time in this binary.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Chromium, node and the pinned puppeteer-core (installed on first use),
/// or `None` when `WSGATE_SKIP_BROWSER=1`.
struct Tools {
    chromium: PathBuf,
    node: PathBuf,
    puppeteer: PathBuf,
}

fn tools(test: &str) -> Option<Tools> {
    if skip_browser() {
        eprintln!(
            "SKIPPED {test}: WSGATE_SKIP_BROWSER=1 (a real-browser test of client/wsgate.js)"
        );
        return None;
    }
    let t = Tools {
        chromium: chromium_binary(),
        node: node_binary(),
        puppeteer: puppeteer_dir(),
    };
    edge::haproxy_binary();
    Some(t)
}

/// Starts `driver.mjs` (headless Chromium) and waits until it launched.
fn launch(t: &Tools) -> Script {
    let chromium = t.chromium.display().to_string();
    let puppeteer = t.puppeteer.display().to_string();
    let mut br = Script::spawn(
        "chromium",
        &t.node,
        &["test/browser/driver.mjs"],
        &[
            ("CHROMIUM", chromium.as_str()),
            ("PUPPETEER_DIR", puppeteer.as_str()),
        ],
        &[],
    );
    br.wait_prefix(Duration::from_secs(30), "launched ");
    br
}

fn redis_or_panic() -> RedisServer {
    RedisServer::start().unwrap_or_else(|| {
        panic!("redis-server is not available (see above); WSGATE_SKIP_BROWSER=1 skips this test")
    })
}

/// The URL of `tab.html` on `origin`, connecting to `ws` and subscribing to
/// `topic`; `tokens` (comma-separated JWTs) makes its token a function.
fn page_url(origin: &str, ws: &str, topic: &str, tokens: Option<&str>) -> String {
    let mut u = format!("{origin}/{PAGE}?ws={ws}&topic={topic}");
    if let Some(t) = tokens {
        u.push_str(&format!("&tokens={t}"));
    }
    u
}

/// `hello <new|resumed> <peer> <node> <user|->` of a tab.
#[derive(Debug)]
struct TabHello {
    state: String,
    peer: String,
    node: String,
    user: String,
}

/// The `n`-th `hello` of tab `tab` (waits up to `within`).
fn tab_hello(br: &mut Script, tab: &str, n: usize, within: Duration) -> TabHello {
    let prefix = format!("tab {tab} hello ");
    let line = br.wait_nth(within, &prefix, n);
    let p: Vec<&str> = line[prefix.len()..].split(' ').collect();
    assert!(
        p.len() == 4 && matches!(p[0], "new" | "resumed"),
        "malformed {line:?}"
    );
    TabHello {
        state: p[0].to_string(),
        peer: p[1].to_string(),
        node: p[2].to_string(),
        user: p[3].to_string(),
    }
}

/// One WebSocket a page's client made (times in that page's ms).
#[derive(Debug, Clone)]
struct Sock {
    created: f64,
    open: Option<f64>,
    close: Option<f64>,
    code: Option<u16>,
    open_wall: Option<f64>,
    close_wall: Option<f64>,
}

fn opt_num(s: &str) -> Option<f64> {
    (s != "-").then(|| s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}")))
}

/// The `sockets` field of `tab.html`'s result:
/// `created:open:close:code:openWall:closeWall,…`.
fn parse_sockets(s: &str) -> Vec<Sock> {
    s.split(',')
        .filter(|i| !i.is_empty())
        .map(|item| {
            let f: Vec<&str> = item.split(':').collect();
            assert_eq!(f.len(), 6, "bad socket record {item:?}");
            Sock {
                created: opt_num(f[0]).expect("created"),
                open: opt_num(f[1]),
                close: opt_num(f[2]),
                code: opt_num(f[3]).map(|c| c as u16),
                open_wall: opt_num(f[4]),
                close_wall: opt_num(f[5]),
            }
        })
        .collect()
}

/// The result of tab `name`.
fn tab_result(br: &mut Script, name: &str) -> Vec<(String, String)> {
    br.result_cmd(&format!("result {name}"), WAIT)
}

/// Fails if a new line starting with one of `forbidden` shows up within
/// `hold` (polled every 20 ms; returns once `hold` has passed).
fn hold_without(br: &mut Script, hold: Duration, forbidden: &[String], why: &str) {
    let before = br.lines().len();
    let until = Instant::now() + hold;
    while Instant::now() < until {
        if let Some(l) = br
            .lines()
            .into_iter()
            .skip(before)
            .find(|l| forbidden.iter().any(|f| l.starts_with(f.as_str())))
        {
            panic!("{why}: {l:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn publish(admin: std::net::SocketAddr, topic: &str, payload: &str) -> u64 {
    api_publish(admin, topic, payload).unwrap_or_else(|e| panic!("publish: {e}"))
}

// ---------------------------------------------------------------------------
// Twenty tabs, one drain
// ---------------------------------------------------------------------------

const TABS: usize = 20;
const FLEET: [&str; 3] = ["tabs-a", "tabs-b", "tabs-c"];
/// `DEFAULTS.drainDelay` of wsgate.js: after close 1001 the client comes
/// back after a uniform delay in `[0, DRAIN_JITTER_MS)`.
const DRAIN_JITTER_MS: f64 = 1000.0;
/// What connecting and resuming through HAProxy may add to that delay:
/// twenty pages and three debug-build nodes on 2 CPUs saw up to 2 s.
const CONNECT_SLACK_MS: f64 = 5000.0;

/// How late a timer may fire on a loaded machine (2 CPUs, twenty pages).
const TIMER_SLACK_MS: f64 = 500.0;

/// One tab's return after the drain (ms in its own clock, from its close).
struct Return {
    tab: String,
    /// The delay the client drew (its "reconnect" event).
    chosen: f64,
    /// Until the client made its new WebSocket.
    waited: f64,
    /// Until that socket's `open` event.
    reopened: f64,
    close_wall: f64,
    open_wall: f64,
    visible: bool,
}

/// How twenty delays after a close are spread over the jitter window.
struct Spread {
    span: f64,
    /// The most delays in one 10 ms bucket.
    crowded: usize,
    /// Quarters of the window `[0, DRAIN_JITTER_MS)` holding a delay (a
    /// later one counts in the last).
    quarters: BTreeSet<i64>,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        let mut buckets: BTreeMap<i64, usize> = BTreeMap::new();
        for x in &v {
            *buckets.entry((x / 10.0).floor() as i64).or_default() += 1;
        }
        Spread {
            span: v[v.len() - 1] - v[0],
            crowded: buckets.values().copied().max().unwrap_or(0),
            quarters: v
                .iter()
                .map(|x| ((x / (DRAIN_JITTER_MS / 4.0)).floor() as i64).clamp(0, 3))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "span {:.0} ms, at most {} in one 10 ms bucket, quarters of the window hit {:?}",
            self.span, self.crowded, self.quarters
        )
    }

    /// Twenty uniform draws from `[0, DRAIN_JITTER_MS)`: their span is below
    /// 40 % of it with probability ~3e-7, six of them share a 10 ms bucket
    /// with ~4e-6, two quarters stay empty with ~6e-6. Lockstep fails all
    /// three.
    fn check(&self, what: &str, list: &[String]) {
        assert!(
            self.span >= 0.4 * DRAIN_JITTER_MS,
            "{what} within {:.0} ms of each other after their own close: less than 40 % of \
             the client's [0, {DRAIN_JITTER_MS}) ms jitter window (lockstep?): {list:?}",
            self.span
        );
        assert!(
            self.crowded <= 5,
            "{what}: {} of them within the same 10 ms after their close (lockstep): {list:?}",
            self.crowded
        );
        assert!(
            self.quarters.len() >= 3,
            "{what}: only {} of the 4 quarters of the jitter window hit: {list:?}",
            self.quarters.len()
        );
    }
}

#[test]
fn twenty_tabs_drained_at_once_come_back_spread_over_the_jitter_window() {
    let Some(tools) = tools("twenty_tabs") else {
        return;
    };
    let _one = serial();
    let redis = redis_or_panic();
    let started = Instant::now();
    let files = StaticServer::start(&client_dir());
    let origin = files.origin();
    let nodes: Vec<Gateway> = FLEET
        .iter()
        .zip(FLEET_DRIVERS)
        .map(|(n, d)| start_node(n, d, &redis.url(), &["--allowed-origin", &origin]))
        .collect();
    for (n, gw) in FLEET.iter().zip(&nodes) {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(10));
    }
    let hap = haproxy_for_fleet(&FLEET, &nodes);
    // Every tab on the first node: the other two out of rotation meanwhile.
    for n in &FLEET[1..] {
        hap.set_state(n, "maint");
        hap.wait_status(n, "MAINT", Duration::from_secs(2));
    }
    let ws_url = format!("ws://{}/ws", hap.addr);
    let topic = topic("browser.tabs");

    let mut br = launch(&tools);
    br.send(&format!(
        "tabs t {TABS} {}",
        page_url(&origin, &ws_url, &topic, None)
    ));
    br.wait_prefix(Duration::from_secs(60), "tabsopened t ");
    let names: Vec<String> = (0..TABS).map(|i| format!("t{i}")).collect();
    let mut peers = Vec::new();
    for t in &names {
        let h = tab_hello(&mut br, t, 1, WAIT);
        assert!(
            h.state == "new" && h.node == FLEET[0],
            "{t}: expected `hello <peer> new {}`, got {h:?}",
            FLEET[0]
        );
        peers.push(h.peer);
        assert_eq!(
            br.wait_prefix(WAIT, &format!("tab {t} ready ")),
            format!("tab {t} ready 0")
        );
    }
    let distinct: BTreeSet<&String> = peers.iter().collect();
    assert_eq!(
        distinct.len(),
        TABS,
        "separate browser contexts must hold separate sessions: {peers:?}"
    );
    for n in &FLEET[1..] {
        hap.set_state(n, "ready");
    }
    for n in &FLEET[1..] {
        hap.wait_status(n, "UP", Duration::from_secs(5));
    }

    // The rolling deploy of the first node: deregister, then SIGTERM.
    hap.set_state(FLEET[0], "maint");
    hap.wait_status(FLEET[0], "MAINT", Duration::from_secs(2));
    let drained_in = terminate(&nodes[0], FLEET[0]);
    for (t, peer) in names.iter().zip(&peers) {
        let h = tab_hello(&mut br, t, 2, WAIT);
        assert!(
            h.state == "resumed" && &h.peer == peer && h.node != FLEET[0],
            "{t}: after the drain of {}: expected `hello {peer} resumed <another node>`, got {h:?}",
            FLEET[0]
        );
    }
    // The sessions kept their subscription.
    let seq = publish(nodes[1].admin, &topic, "after-drain");
    for t in &names {
        br.wait_prefix(WAIT, &format!("tab {t} msg {seq} after-drain"));
    }

    // Per tab, in its own clock: from its close (1001) to the start of its
    // new socket (the client's wait), and to that socket's `open`.
    let mut back = Vec::new();
    let mut failed_attempts = 0;
    for t in &names {
        let r = tab_result(&mut br, t);
        let socks = parse_sockets(field(&r, "sockets"));
        assert_eq!(
            field(&r, "states"),
            "connecting,open,reconnecting,open",
            "{t}: state transitions"
        );
        assert_eq!(field(&r, "errors"), "", "{t}: no error");
        // One socket was open before the drain (the hellos above say so) and
        // closed 1001; one is open now. An attempt the balancer refused (a
        // health check timing out on a busy machine) may come before or
        // between them: not the client's doing.
        let drained: Vec<usize> = (0..socks.len())
            .filter(|&i| socks[i].code == Some(1001))
            .collect();
        let [k] = drained[..] else {
            panic!("{t}: expected one socket closed 1001: {socks:?}");
        };
        let reopened_at = (k + 1..socks.len()).find(|&i| socks[i].open.is_some());
        let Some(o) = reopened_at else {
            panic!("{t}: no socket opened after the 1001: {socks:?}");
        };
        assert!(
            socks[k].open.is_some() && socks[o].close.is_none(),
            "{t}: expected the socket closed 1001 to have been open, and the one after it to \
             be open: {socks:?}"
        );
        failed_attempts += socks.len() - 2;
        let quick: Vec<&str> = field(&r, "reconnects")
            .split(',')
            .filter(|e| e.starts_with("1001:"))
            .collect();
        let chosen: f64 = match quick[..] {
            [one] => {
                let p: Vec<&str> = one.split(':').collect();
                assert!(
                    p.len() == 3 && p[2] == "quick",
                    "{t}: expected a quick reconnect after 1001: {one:?}"
                );
                p[1].parse().expect("delay")
            }
            _ => panic!("{t}: expected one reconnect after 1001: {quick:?}"),
        };
        let closed = socks[k].close.unwrap();
        let ret = Return {
            tab: t.clone(),
            chosen,
            waited: socks[k + 1].created - closed,
            reopened: socks[o].open.unwrap() - closed,
            close_wall: socks[k].close_wall.unwrap(),
            open_wall: socks[o].open_wall.unwrap(),
            visible: field(&r, "visibility") == "visible",
        };
        assert!(
            (0.0..DRAIN_JITTER_MS).contains(&chosen),
            "{t}: the client chose {chosen} ms after 1001, outside [0, {DRAIN_JITTER_MS})"
        );
        assert!(
            ret.waited >= chosen - 5.0
                && ret.waited < chosen + TIMER_SLACK_MS
                && ret.reopened < DRAIN_JITTER_MS + TIMER_SLACK_MS + CONNECT_SLACK_MS,
            "{t}: chose {chosen} ms, started its new socket {:.0} ms and had one open {:.0} ms \
             after its close",
            ret.waited,
            ret.reopened
        );
        back.push(ret);
    }
    assert!(page_finish(&mut br), "the driver did not exit 0");

    let waited = Spread::of(back.iter().map(|b| b.waited).collect());
    let reopened = Spread::of(back.iter().map(|b| b.reopened).collect());
    let wall_span = |v: Vec<f64>| {
        v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min)
    };
    let close_spread = wall_span(back.iter().map(|b| b.close_wall).collect());
    let reopen_spread = wall_span(back.iter().map(|b| b.open_wall).collect());
    back.sort_by(|a, b| a.reopened.total_cmp(&b.reopened));
    let list: Vec<String> = back
        .iter()
        .map(|b| {
            format!(
                "{}:{:.0}/{:.0}/{:.0}",
                b.tab, b.chosen, b.waited, b.reopened
            )
        })
        .collect();
    let hidden: Vec<&String> = back.iter().filter(|b| !b.visible).map(|b| &b.tab).collect();
    eprintln!(
        "{TABS} tabs drained from {} in {drained_in:?}: the gateway spread its closes over \
         {close_spread:.0} ms, the tabs' new sockets opened over {reopen_spread:.0} ms. Per tab \
         (its own clock, from its close), chosen delay/new socket started/open, ms: {}. Client's \
         wait: {}; socket reopened: {}; hidden pages: {hidden:?}; attempts refused by the \
         balancer: {failed_attempts}; {:.1} s in all",
        FLEET[0],
        list.join(" "),
        waited.describe(),
        reopened.describe(),
        started.elapsed().as_secs_f64()
    );
    waited.check("the tabs' clients started their new sockets", &list);
    reopened.check("the tabs' sockets reopened", &list);
    for gw in &nodes[1..] {
        gw.assert_healthy();
    }
    eprintln!("HAProxy 5xx: {}", haproxy_5xx(&hap));
}

/// Closes the driver's stdin and waits for it to exit (0).
fn page_finish(br: &mut Script) -> bool {
    br.finish(Duration::from_secs(10))
}

// ---------------------------------------------------------------------------
// 1008 "replaced"
// ---------------------------------------------------------------------------

#[test]
fn a_second_tab_of_the_same_browser_takes_over_and_the_first_stays_closed() {
    let Some(tools) = tools("replaced") else {
        return;
    };
    let _one = serial();
    let redis = redis_or_panic();
    let started = Instant::now();
    let files = StaticServer::start(&client_dir());
    let origin = files.origin();
    let names = ["repl-a", "repl-b", "repl-c"];
    let nodes: Vec<Gateway> = names
        .iter()
        .zip(FLEET_DRIVERS)
        .map(|(n, d)| start_node(n, d, &redis.url(), &["--allowed-origin", &origin]))
        .collect();
    for (n, gw) in names.iter().zip(&nodes) {
        wait_redis_up(gw, n, 1.0, Duration::from_secs(10));
    }
    let hap = haproxy_for_fleet(&names, &nodes);
    let ws_url = format!("ws://{}/ws", hap.addr);
    let topic = topic("browser.replaced");
    let url = page_url(&origin, &ws_url, &topic, None);

    let mut br = launch(&tools);
    // Two tabs of one browser: one context, one cookie jar.
    br.send(&format!("tab first shared {url}"));
    br.wait_prefix(WAIT, "tabopened first");
    let h1 = tab_hello(&mut br, "first", 1, WAIT);
    assert_eq!(h1.state, "new", "the first tab starts a session: {h1:?}");
    br.wait_prefix(WAIT, "tab first ready ");
    let node = names
        .iter()
        .position(|n| *n == h1.node)
        .expect("a fleet node");
    let admin = nodes[node].admin;
    let s1 = publish(admin, &topic, "before");
    br.wait_prefix(WAIT, &format!("tab first msg {s1} before"));

    br.send(&format!("tab second shared {url}"));
    br.wait_prefix(WAIT, "tabopened second");
    let h2 = tab_hello(&mut br, "second", 1, WAIT);
    assert!(
        h2.state == "resumed" && h2.peer == h1.peer && h2.node == h1.node,
        "the second tab presents the shared cookie: expected `hello {} resumed {}`, got {h2:?}",
        h1.peer,
        h1.node
    );
    // Its socket gets close 1008 "replaced" and the client goes `closed`.
    br.wait_prefix(WAIT, "tab first socket 1 close 1008 replaced ");
    let next = br.wait(WAIT, "the first tab's state after its close", |ls| {
        let at = ls
            .iter()
            .position(|l| l.starts_with("tab first socket 1 close "))?;
        ls[at..]
            .iter()
            .find(|l| l.starts_with("tab first state "))
            .cloned()
    });
    assert!(
        next.starts_with("tab first state closed open "),
        "after close 1008 \"replaced\" the first tab must go closed, not reconnect: {next:?}"
    );
    br.wait_prefix(WAIT, "tab first error REPLACED ");
    br.wait_prefix(WAIT, "tab second ready ");
    let s2 = publish(admin, &topic, "after");
    br.wait_prefix(WAIT, &format!("tab second msg {s2} after"));

    // The first tab stays closed: no new socket, no other state, for 3 s.
    hold_without(
        &mut br,
        Duration::from_secs(3),
        &[
            "tab first socket 2 ".to_string(),
            "tab first state connecting".to_string(),
            "tab first state reconnecting".to_string(),
            "tab first state open".to_string(),
            "tab second state ".to_string(),
        ],
        "after 1008 \"replaced\" the first tab must stay closed and leave the second alone",
    );
    let s3 = publish(admin, &topic, "later");
    br.wait_prefix(WAIT, &format!("tab second msg {s3} later"));
    // Anything for the first tab would come now.
    std::thread::sleep(Duration::from_millis(200));

    let first = tab_result(&mut br, "first");
    let second = tab_result(&mut br, "second");
    assert!(page_finish(&mut br), "the driver did not exit 0");
    assert_eq!(field(&first, "state"), "closed");
    assert_eq!(field(&first, "error"), "REPLACED");
    assert_eq!(field(&first, "states"), "connecting,open,closed");
    let socks = parse_sockets(field(&first, "sockets"));
    assert!(
        socks.len() == 1 && socks[0].code == Some(1008),
        "the first tab made one socket, closed 1008: {socks:?}"
    );
    assert_eq!(
        field(&first, "reconnects"),
        "",
        "the first tab never reconnects"
    );
    assert_eq!(
        field(&first, "delivered"),
        format!("{s1}:before"),
        "the first tab got nothing after the takeover"
    );
    assert_eq!(field(&second, "state"), "open");
    assert_eq!(field(&second, "states"), "connecting,open");
    assert_eq!(field(&second, "errors"), "");
    assert_eq!(parse_sockets(field(&second, "sockets")).len(), 1);
    let got = field(&second, "delivered").to_string();
    assert!(
        got.ends_with(&format!("{s2}:after,{s3}:later")),
        "the second tab's messages: {got:?}"
    );
    let closes = nodes[node]
        .scrape()
        .val("wsgate_closes_total{code=\"1008\"}");
    assert_eq!(closes, 1.0, "{}: one close 1008 (the takeover)", h1.node);
    eprintln!(
        "two tabs of one browser on {}: the second resumed {} and the first closed on 1008 \
         \"replaced\" and stayed closed 3 s; {:.1} s in all",
        h1.node,
        h1.peer,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// `hello … new` after the session TTL
// ---------------------------------------------------------------------------

const TTL: Duration = Duration::from_secs(2);

#[test]
fn after_the_session_ttl_the_tab_gets_a_new_session_resubscribes_and_reports_the_gap() {
    let Some(tools) = tools("new_after_ttl") else {
        return;
    };
    let _one = serial();
    let started = Instant::now();
    let files = StaticServer::start(&client_dir());
    let origin = files.origin();
    let ttl = format!("{}s", TTL.as_secs());
    let name = "ttl-a";
    let node = start_node(
        name,
        Driver::IoUring,
        "",
        &["--allowed-origin", &origin, "--session-ttl", &ttl],
    );
    let hap = haproxy_for(&[(name, &node)]);
    let ws_url = format!("ws://{}/ws", hap.addr);
    let topic = topic("browser.ttl");

    let mut br = launch(&tools);
    br.send(&format!(
        "tab t solo {}",
        page_url(&origin, &ws_url, &topic, None)
    ));
    br.wait_prefix(WAIT, "tabopened t");
    let h1 = tab_hello(&mut br, "t", 1, WAIT);
    assert!(
        h1.state == "new" && h1.node == name && h1.user == "-",
        "expected `hello <peer> new {name}` (no user: auth is off), got {h1:?}"
    );
    assert_eq!(br.wait_prefix(WAIT, "tab t ready "), "tab t ready 0");
    for i in 1..=3 {
        assert_eq!(publish(node.admin, &topic, &format!("m-{i}")), i);
    }
    br.wait_prefix(WAIT, "tab t msg 3 m-3");

    // Cut the page off at the balancer and keep it away (503 on upgrade).
    hap.set_state(name, "maint");
    hap.wait_status(name, "MAINT", Duration::from_secs(2));
    let cut = Instant::now();
    let answer = hap.admin(&format!(
        "shutdown sessions server {}/{name}",
        edge::BACKEND
    ));
    assert!(answer.trim().is_empty(), "shutdown sessions: {answer:?}");
    br.wait_prefix(WAIT, "tab t state reconnecting ");
    gw::wait_open_connections(&node, 0, "the page's socket is gone");
    // Published while it is away: not replayed to a new session.
    for i in 4..=5 {
        assert_eq!(publish(node.admin, &topic, &format!("m-{i}")), i);
    }
    let ended = "wsgate_sessions_total{event=\"ended\"}";
    let s = node.scrape_until(TTL + Duration::from_secs(8), |s| s.val(ended) >= 1.0);
    let expired_after = cut.elapsed();
    assert_eq!(s.val(ended), 1.0, "the session must end by its TTL");
    assert!(
        expired_after >= TTL - Duration::from_millis(300),
        "the session ended {expired_after:?} after the cut: before --session-ttl {ttl}"
    );
    assert!(
        !br.lines()
            .iter()
            .any(|l| l.starts_with("tab t hello ") && l.contains(" resumed ")),
        "the page must not have come back before the session ended"
    );
    let misses_before = node.scrape().val("wsgate_sticky_misses_total");

    // Back in rotation: the page's backoff brings it back (at most 10 s).
    hap.set_state(name, "ready");
    hap.wait_status(name, "UP", Duration::from_secs(5));
    let h2 = tab_hello(&mut br, "t", 2, Duration::from_secs(20));
    assert!(
        h2.state == "new" && h2.peer != h1.peer && h2.node == name,
        "after the TTL: expected `hello <another peer> new {name}`, got {h2:?}"
    );
    // The gap is reported on the `ok sub` of the re-subscription.
    let gap = br.wait_prefix(WAIT, "tab t gap ");
    assert_eq!(gap, "tab t gap 4 5 new-session");
    let s6 = publish(node.admin, &topic, "m-6");
    assert_eq!(s6, 6);
    br.wait_prefix(WAIT, "tab t msg 6 m-6");
    std::thread::sleep(Duration::from_millis(200));

    let r = tab_result(&mut br, "t");
    assert!(page_finish(&mut br), "the driver did not exit 0");
    assert_eq!(
        field(&r, "delivered"),
        "1:m-1,2:m-2,3:m-3,6:m-6",
        "what the application got"
    );
    assert_eq!(field(&r, "gaps"), "4..5 new-session");
    assert_eq!(field(&r, "states"), "connecting,open,reconnecting,open");
    assert_eq!(field(&r, "errors"), "");
    let misses = node.scrape().val("wsgate_sticky_misses_total") - misses_before;
    assert_eq!(
        misses, 1.0,
        "the page came back with its old cookie, naming the expired session (a sticky miss)"
    );
    let attempts = parse_sockets(field(&r, "sockets")).len();
    eprintln!(
        "session ended {expired_after:?} after the cut (--session-ttl {ttl}); the page came back \
         with `hello {} new {name}` after {} refused attempts, re-subscribed, reported the gap \
         4..5 (new-session) and got seq 6; {:.1} s in all",
        h2.peer,
        attempts - 2,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// In-band token refresh
// ---------------------------------------------------------------------------

#[cfg(feature = "auth")]
#[test]
fn with_auth_a_short_token_is_refreshed_on_the_open_socket_past_its_expiry() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let Some(tools) = tools("token_refresh") else {
        return;
    };
    let _one = serial();
    let started = Instant::now();
    let keys = auth::Keys::new();
    let files = StaticServer::start(&client_dir());
    let origin = files.origin();
    let name = "auth-a";
    let gw = start_node(
        name,
        Driver::IoUring,
        "",
        &[
            "--allowed-origin",
            &origin,
            "--jwt-secret-file",
            &keys.secret_file,
            "--jwt-leeway",
            "0s",
            "--allow-sub",
            "auth.*",
            "--allow-pub",
            "auth.*",
        ],
    );
    let hap = haproxy_for(&[(name, &gw)]);
    let ws_url = format!("ws://{}/ws", hap.addr);
    let topic = topic("auth.browser");

    const LIFE: i64 = 6;
    let iat = auth::now();
    let exp1 = iat + LIFE;
    let exp2 = iat + 300;
    let short = auth::hs256(&serde_json::json!({"sub": "alice", "iat": iat, "exp": exp1}));
    let long = auth::hs256(&serde_json::json!({"sub": "alice", "iat": iat, "exp": exp2}));
    let tokens = format!("{short},{long}");

    let mut br = launch(&tools);
    br.send(&format!(
        "tab a solo {}",
        page_url(&origin, &ws_url, &topic, Some(&tokens))
    ));
    br.wait_prefix(WAIT, "tabopened a");
    let h = tab_hello(&mut br, "a", 1, WAIT);
    assert!(
        h.state == "new" && h.user == "alice",
        "expected `hello <peer> new {name} alice`, got {h:?}"
    );
    br.wait_prefix(WAIT, "tab a ready ");
    let s1 = publish(gw.admin, &topic, "early");
    br.wait_prefix(WAIT, &format!("tab a msg {s1} early"));

    // `auth <jwt>` at ~80 % of the first token's life: `ok auth <exp>`.
    let line = br.wait_prefix(Duration::from_secs(LIFE as u64 + 3), "tab a auth ");
    let p: Vec<&str> = line["tab a auth ".len()..].split(' ').collect();
    assert_eq!(p.len(), 2, "malformed {line:?}");
    assert_eq!(p[0], exp2.to_string(), "ok auth names the new token's exp");
    let at_ms: f64 = p[1].parse().expect("auth time");
    let refresh_ms = (iat as f64 + 0.8 * LIFE as f64) * 1000.0;
    assert!(
        at_ms >= refresh_ms - 100.0 && at_ms < (exp1 * 1000) as f64,
        "the refresh came {:.2} s after iat: expected at 80 % of the {LIFE} s life, before exp",
        at_ms / 1000.0 - iat as f64
    );

    // Past the first token's exp (leeway 0 s): the session goes on.
    let wall = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let past = exp1 as f64 + 1.0;
    while wall() < past {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s2 = publish(gw.admin, &topic, "past-exp");
    br.wait_prefix(WAIT, &format!("tab a msg {s2} past-exp"));
    std::thread::sleep(Duration::from_millis(200));

    let r = tab_result(&mut br, "a");
    assert!(page_finish(&mut br), "the driver did not exit 0");
    let socks = parse_sockets(field(&r, "sockets"));
    assert!(
        socks.len() == 1 && socks[0].close.is_none(),
        "one socket, never closed: {socks:?}"
    );
    assert_eq!(field(&r, "states"), "connecting,open", "no reconnect");
    assert_eq!(field(&r, "state"), "open");
    assert_eq!(
        field(&r, "tokens"),
        "initial,refresh",
        "why the token function was called"
    );
    assert_eq!(field(&r, "auths").split(',').count(), 1, "one refresh");
    assert_eq!(field(&r, "errors"), "");
    assert_eq!(field(&r, "delivered"), format!("{s1}:early,{s2}:past-exp"));
    let sc = gw.scrape();
    assert_eq!(sc.val("wsgate_auth_tokens_expired_total"), 0.0);
    assert_eq!(sc.val("wsgate_closes_total{code=\"1008\"}"), 0.0);
    eprintln!(
        "token of {LIFE} s refreshed in band {:.2} s after its iat (ok auth {exp2}); a message \
         published {:.1} s after its exp arrived on the same socket; {:.1} s in all",
        at_ms / 1000.0 - iat as f64,
        wall() - exp1 as f64,
        started.elapsed().as_secs_f64()
    );
}
