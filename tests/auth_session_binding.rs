//! A session belongs to its user (DESIGN §11). A cookie naming a session of
//! another user is a sticky miss: the upgrade succeeds with a NEW session
//! id in `Set-Cookie` and `hello … new … <user>`, the other user's session
//! is untouched (its socket stays open, its subscriptions keep working, it
//! can still resume), and `wsgate_auth_session_mismatch_total` counts it.
//! The same user with its own cookie resumes.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::Duration;

use auth::client::{upgrade, Upgrade, Ws};
use auth::*;
use common::{for_each_driver, is_uuid_v4, Gateway};
use gw::{api_publish, topic, wait_open_connections};

const MISMATCH: &str = "wsgate_auth_session_mismatch_total";
const MISSES: &str = "wsgate_sticky_misses_total";
const HITS: &str = "wsgate_sticky_hits_total";
const QUIET: Duration = Duration::from_millis(300);

fn connect(gw: &Gateway, name: &str, req: &Upgrade) -> Ws {
    upgrade(gw.addr, name, req).unwrap_or_else(|r| panic!("{name}: refused:\n{}{}", r.head, r.body))
}

#[test]
fn another_users_cookie_starts_a_new_session_and_leaves_the_owners_alone() {
    let keys = Keys::new();
    let args = gw_args(&[
        "--jwt-secret-file",
        &keys.secret_file,
        "--allow-sub",
        "*",
        "--allow-pub",
        "*",
    ]);
    for_each_driver(&strs(&args), |gw| {
        let t = topic("bound");
        let alice_token = hs256(&claims("alice", 300));
        let mallory_token = hs256(&claims("mallory", 300));
        let mut alice = connect(gw, "alice", &Upgrade::bearer(&alice_token));
        assert_eq!(
            alice.hello,
            format!("hello {} new {} alice", alice.peer, gw::NODE)
        );
        assert_eq!(alice.sub(&t), 0);
        let s0 = gw.scrape();

        // Mallory presents alice's live session id.
        let mut m1 = connect(
            gw,
            "mallory",
            &Upgrade::bearer(&mallory_token).cookie(&alice.id),
        );
        assert_ne!(m1.id, alice.id, "another user's cookie must not be kept");
        assert!(is_uuid_v4(&m1.id));
        assert_ne!(m1.peer, alice.peer, "a new session has a new peer id");
        assert_eq!(
            m1.hello,
            format!("hello {} new {} mallory", m1.peer, gw::NODE),
            "another user's cookie starts a new session"
        );
        assert_eq!(wait_series(gw, MISMATCH, 1.0), 1.0, "{MISMATCH}");
        assert_eq!(
            wait_series(gw, MISSES, s0.sum(MISSES) + 1.0),
            s0.sum(MISSES) + 1.0,
            "the mismatch is a sticky miss"
        );
        assert_eq!(gw.scrape().sum(HITS), s0.sum(HITS), "and not a hit");

        // Alice is untouched: no close, no presence change, still subscribed.
        alice.expect_quiet(QUIET, "alice's socket after mallory's upgrade");
        assert_eq!(api_publish(gw, &t, b"one", false), 1);
        alice.expect_line(&format!("msg {t} 1 one"), "alice still subscribed");
        m1.expect_quiet(QUIET, "mallory got none of alice's subscriptions");
        assert_eq!(alice.who(&t), vec![alice.member()]);
        assert_eq!(m1.sub(&t), 1);
        alice.expect_line(
            &format!("join {t} {} mallory", m1.peer),
            "mallory's own, new session joins",
        );

        // Alice goes away (resumable); mallory tries her cookie again.
        let alice_id = alice.id.clone();
        let alice_peer = alice.peer.clone();
        alice.drop_tcp();
        wait_open_connections(gw, 1, "after alice dropped");
        assert_eq!(api_publish(gw, &t, b"missed", false), 2);
        m1.expect_line(&format!("msg {t} 2 missed"), "mallory's subscription");
        let m2 = connect(
            gw,
            "mallory again",
            &Upgrade::bearer(&mallory_token).cookie(&alice_id),
        );
        assert!(
            m2.id != alice_id && m2.id != m1.id && m2.state == "new",
            "a resumable session of another user: {:?}",
            m2.hello
        );
        assert_eq!(m2.user.as_deref(), Some("mallory"));
        assert_eq!(wait_series(gw, MISMATCH, 2.0), 2.0, "{MISMATCH}");

        // Alice, with her own cookie and a token of hers, resumes it all.
        let alice_token2 = hs256(&claims("alice", 300));
        let mut alice = connect(
            gw,
            "alice",
            &Upgrade::bearer(&alice_token2).cookie(&alice_id),
        );
        assert_eq!(alice.id, alice_id, "her own cookie is kept");
        assert_eq!(
            alice.hello,
            format!("hello {alice_peer} resumed {} alice", gw::NODE),
            "the same user with her own cookie resumes"
        );
        alice.expect_line(&format!("msg {t} 2 missed"), "the replay");
        let mut members = vec![alice.member(), m1.member()];
        members.sort();
        assert_eq!(alice.who(&t), members);
        assert_eq!(
            gw.scrape().sum(MISMATCH),
            2.0,
            "a resume by the owner is no mismatch"
        );
        m1.expect_quiet(QUIET, "no leave/join for alice's resume");

        let secrets = [
            token_secrets(&alice_token),
            token_secrets(&alice_token2),
            token_secrets(&mallory_token),
            vec![alice_id.clone(), m1.id.clone(), m2.id.clone()],
        ]
        .concat();
        alice.close();
        m1.close();
        m2.close();
        assert_no_secrets(gw, &secrets);
    });
}
