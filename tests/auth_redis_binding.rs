//! With `--redis`, a session's user is stored with it and checked on any
//! node (DESIGN §11, issue 14): alice's session lives on node A; mallory
//! presents alice's cookie on node B and gets a NEW session there (counted
//! in B's `wsgate_auth_session_mismatch_total`), while alice's socket on A
//! stays open and keeps receiving. After A dies, mallory still cannot take
//! the session over on B, and alice herself resumes it on B.
//!
//! Two nodes (io_uring, epoll) on a private redis-server (installed when
//! missing; skipped with a message if that fails outside CI).

#![cfg(feature = "auth")]

mod auth;
mod common;
mod edge;
mod gw;
mod redis;

use std::time::Duration;

use auth::client::{upgrade, Upgrade, Ws};
use auth::*;
use common::Gateway;
use redis::RedisServer;

const MISMATCH: &str = "wsgate_auth_session_mismatch_total";

fn connect(gw: &Gateway, name: &str, req: &Upgrade) -> Ws {
    upgrade(gw.addr, name, req)
        .unwrap_or_else(|r| panic!("{name} at {}: refused:\n{}{}", gw.addr, r.head, r.body))
}

fn publish(gw: &Gateway, topic: &str, body: &str) -> u64 {
    redis::api_publish(gw.admin, topic, body).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_session_is_bound_to_its_user_on_every_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let keys = Keys::new();
    let extra = [
        "--jwt-secret-file",
        keys.secret_file.as_str(),
        "--allow-sub",
        "*",
        "--allow-pub",
        "*",
    ];
    let (a, b) = redis::start_pair(["bind-a", "bind-b"], &redis.url(), &extra);
    let t = redis::topic("bound");
    let alice_token = hs256(&claims("alice", 300));
    let mallory_token = hs256(&claims("mallory", 300));

    let mut alice = connect(&a, "alice", &Upgrade::bearer(&alice_token));
    assert_eq!(
        alice.hello,
        format!("hello {} new bind-a alice", alice.peer)
    );
    assert_eq!(alice.sub(&t), 0);

    // Mallory presents alice's live session id on the other node.
    let mut m1 = connect(
        &b,
        "mallory@b",
        &Upgrade::bearer(&mallory_token).cookie(&alice.id),
    );
    assert_ne!(m1.id, alice.id, "node B kept another user's session id");
    assert_eq!(
        m1.hello,
        format!("hello {} new bind-b mallory", m1.peer),
        "another user's cookie on another node starts a new session"
    );
    assert_eq!(wait_series(&b, MISMATCH, 1.0), 1.0, "bind-b: {MISMATCH}");
    assert_eq!(a.scrape().sum(MISMATCH), 0.0, "bind-a: {MISMATCH}");

    // Alice on A is untouched: no close, still subscribed, still the only
    // member.
    alice.expect_quiet(Duration::from_millis(500), "alice after mallory's upgrade");
    assert_eq!(publish(&b, &t, "one"), 1);
    alice.expect_line(
        &format!("msg {t} 1 one"),
        "a publish on B reaches alice on A",
    );
    m1.expect_quiet(Duration::from_millis(300), "mallory subscribed to nothing");
    assert_eq!(alice.who(&t), vec![alice.member()]);
    assert_eq!(m1.who(&t), vec![alice.member()], "presence is fleet-wide");

    // Node A dies. Mallory tries the cookie on B again; then alice resumes
    // there.
    let alice_id = alice.id.clone();
    let alice_peer = alice.peer.clone();
    a.send_signal("KILL");
    a.wait_exit(Duration::from_secs(5))
        .expect("bind-a did not die from SIGKILL");
    let m2 = connect(
        &b,
        "mallory@b again",
        &Upgrade::bearer(&mallory_token).cookie(&alice_id),
    );
    assert!(
        m2.id != alice_id && m2.state == "new" && m2.user.as_deref() == Some("mallory"),
        "mallory with alice's cookie after A died: {:?} (id kept: {})",
        m2.hello,
        m2.id == alice_id
    );
    assert_eq!(wait_series(&b, MISMATCH, 2.0), 2.0, "bind-b: {MISMATCH}");
    assert_eq!(publish(&b, &t, "missed"), 2);

    let mut alice = connect(
        &b,
        "alice@b",
        &Upgrade::bearer(&alice_token).cookie(&alice_id),
    );
    assert_eq!(alice.id, alice_id);
    assert_eq!(
        alice.hello,
        format!("hello {alice_peer} resumed bind-b alice"),
        "alice resumes her own session on B"
    );
    // A crash may re-deliver what was sent just before it (seq 1); then
    // the missed message.
    let mut l = alice.data_line("the replay");
    if l == format!("msg {t} 1 one") {
        l = alice.data_line("the replay");
    }
    assert_eq!(l, format!("msg {t} 2 missed"), "the missed message");
    assert_eq!(
        b.scrape().sum(MISMATCH),
        2.0,
        "the owner's resume is no mismatch"
    );
    let secrets = [
        token_secrets(&alice_token),
        token_secrets(&mallory_token),
        vec![alice_id.clone(), m1.id.clone(), m2.id.clone()],
    ]
    .concat();
    alice.close();
    m1.close();
    m2.close();
    assert_no_secrets(&b, &secrets);
    assert_no_secrets(&a, &secrets);
    b.assert_healthy();
}
