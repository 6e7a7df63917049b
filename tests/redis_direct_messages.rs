//! With `--redis`, `POST /send/session/<id>` and `POST /send/user/<user>`
//! work on any node (DESIGN §12, issue 15): the request reaches the session
//! on the node that holds it, or every tab of a user on every node, and the
//! answer counts the deliveries on all of them. A disconnected session
//! keeps its direct messages in Redis: it gets them, after its topics'
//! replay, when it resumes on another node, and also when the node that
//! held it is dead.
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
use gw::admin_request;
use redis::RedisServer;

const QUIET: Duration = Duration::from_millis(400);

fn connect(gw: &Gateway, name: &str, req: &Upgrade) -> Ws {
    upgrade(gw.addr, name, req)
        .unwrap_or_else(|r| panic!("{name} at {}: refused:\n{}{}", gw.addr, r.head, r.body))
}

fn send(gw: &Gateway, path: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {}", redis::TOKEN);
    let h = [("Authorization", auth.as_str())];
    let r = admin_request(gw, "POST", path, &h, Some(body.as_bytes()));
    (r.status, r.body.trim_end().to_string())
}

#[test]
fn direct_messages_reach_sessions_and_users_on_every_node() {
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
    let (a, b) = redis::start_pair(["direct-a", "direct-b"], &redis.url(), &extra);
    let alice_token = hs256(&claims("alice", 300));
    let bob_token = hs256(&claims("bob", 300));
    let t = redis::topic("direct");

    let mut tab_a = connect(&a, "alice@a", &Upgrade::bearer(&alice_token));
    let mut tab_b = connect(&b, "alice@b", &Upgrade::bearer(&alice_token));
    let mut bob = connect(&b, "bob@b", &Upgrade::bearer(&bob_token));

    // (1) A session on the other node.
    let to_a = format!("/send/session/{}", tab_a.id);
    assert_eq!(
        send(&b, &to_a, "for tab a"),
        (200, r#"{"delivered":1,"held":0}"#.to_string()),
        "a session on node A, asked on node B"
    );
    tab_a.expect_line("direct for tab a", "forwarded to its node");
    tab_b.expect_quiet(QUIET, "the other tab");

    // (2) Every tab of a user, on both nodes; the answer counts both.
    for (via, what) in [(&a, "from a"), (&b, "from b")] {
        assert_eq!(
            send(via, "/send/user/alice", what),
            (200, r#"{"delivered":2,"held":0}"#.to_string()),
            "alice's two tabs, asked on {}",
            via.addr
        );
        tab_a.expect_line(&format!("direct {what}"), "tab on A");
        tab_b.expect_line(&format!("direct {what}"), "tab on B");
    }
    bob.expect_quiet(QUIET, "bob gets none of alice's");
    assert_eq!(
        send(&a, "/send/user/carol", "x"),
        (404, r#"{"delivered":0,"held":0}"#.to_string())
    );
    let unknown = "/send/session/6f1c3c2e-6a51-4d43-9d7b-3f1c9c0a1b2c";
    assert_eq!(
        send(&b, unknown, "x"),
        (404, r#"{"delivered":0,"held":0}"#.to_string())
    );

    // (3) Tab A goes away (no close: resumable) while subscribed; what it
    // misses is kept, and it resumes on node B: the topic's replay first,
    // then its direct messages in order.
    assert_eq!(tab_a.sub(&t), 0);
    let a_id = tab_a.id.clone();
    tab_a.drop_tcp();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(redis::api_publish(b.admin, &t, "missed").unwrap(), 1);
    for i in 1..=3 {
        assert_eq!(
            send(&b, &to_a, &format!("kept {i}")),
            (404, r#"{"delivered":0,"held":1}"#.to_string()),
            "held for the resume by the node that has it"
        );
    }
    let mut back = connect(
        &b,
        "alice@b (tab a back)",
        &Upgrade::bearer(&alice_token).cookie(&a_id),
    );
    assert_eq!(back.id, a_id);
    assert_eq!(back.state, "resumed", "{:?}", back.hello);
    assert_eq!(back.data_line("the replay"), format!("msg {t} 1 missed"));
    for i in 1..=3 {
        assert_eq!(back.data_line("kept direct"), format!("direct kept {i}"));
    }
    back.expect_quiet(QUIET, "nothing more (no duplicate, no gap)");
    assert_eq!(
        send(&a, &to_a, "now on b"),
        (200, r#"{"delivered":1,"held":0}"#.to_string()),
        "asked on its old node, delivered on the new one"
    );
    back.expect_line("direct now on b", "after the move");

    // (4) Node B dies with tab B's session on it (disconnected first, so
    // nobody serves it): a message for it is kept in Redis and reaches it
    // when it resumes on node A.
    let b_id = tab_b.id.clone();
    tab_b.drop_tcp();
    std::thread::sleep(Duration::from_millis(300));
    b.send_signal("KILL");
    b.wait_exit(Duration::from_secs(5))
        .expect("direct-b did not die from SIGKILL");
    let to_b = format!("/send/session/{b_id}");
    assert_eq!(
        send(&a, &to_b, "while b is dead"),
        (404, r#"{"delivered":0,"held":1}"#.to_string()),
        "kept in Redis for a session whose node is gone"
    );
    let mut again = connect(
        &a,
        "alice@a (tab b back)",
        &Upgrade::bearer(&alice_token).cookie(&b_id),
    );
    assert_eq!(again.state, "resumed", "{:?}", again.hello);
    again.expect_line("direct while b is dead", "kept across the crash");

    // The session ids went to the admin port and Redis only.
    for gw in [&a, &b] {
        let logs = gw.logs().join("\n");
        for id in [&a_id, &b_id] {
            assert!(!logs.contains(id.as_str()), "a session id in the logs");
        }
    }
}
