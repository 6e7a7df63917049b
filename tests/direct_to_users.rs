//! `POST /send/user/<user>` (DESIGN §12): every open tab of a user gets the
//! `direct` line, wherever its session lives among the cores; other users
//! get nothing; the answer counts the tabs.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::Duration;

use auth::client::{upgrade, Upgrade, Ws};
use auth::*;
use common::{for_each_driver, Gateway};
use gw::admin_request;

const QUIET: Duration = Duration::from_millis(300);

fn connect(gw: &Gateway, name: &str, token: &str) -> Ws {
    upgrade(gw.addr, name, &Upgrade::bearer(token))
        .unwrap_or_else(|r| panic!("{name}: refused:\n{}{}", r.head, r.body))
}

fn send_user(gw: &Gateway, user: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {PUBLISH_TOKEN}");
    let h = [("Authorization", auth.as_str())];
    let r = admin_request(
        gw,
        "POST",
        &format!("/send/user/{user}"),
        &h,
        Some(body.as_bytes()),
    );
    (r.status, r.body.trim_end().to_string())
}

#[test]
fn every_tab_of_a_user_gets_it() {
    let keys = Keys::new();
    let args = gw_args(&["--jwt-secret-file", &keys.secret_file]);
    for_each_driver(&strs(&args), |gw| {
        let alice_token = hs256(&claims("alice@example.com", 300));
        let bob_token = hs256(&claims("bob", 300));
        // Six tabs: with two cores, both hold some of alice's sessions.
        let mut tabs: Vec<Ws> = (0..6)
            .map(|i| connect(gw, &format!("alice tab {i}"), &alice_token))
            .collect();
        let mut bob = connect(gw, "bob", &bob_token);

        let (status, body) = send_user(gw, "alice@example.com", "you have mail");
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"delivered":6,"held":0}"#)
        );
        for tab in &mut tabs {
            tab.expect_line("direct you have mail", "every tab");
        }
        bob.expect_quiet(QUIET, "bob gets none of alice's");

        let (status, body) = send_user(gw, "carol", "nobody home");
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"delivered":0,"held":0}"#)
        );

        // A tab that went away keeps it for its resume.
        let gone = tabs.pop().expect("a tab");
        let id = gone.id.clone();
        gone.drop_tcp();
        gw::wait_open_connections(gw, 6, "one of alice's tabs is gone");
        let (status, body) = send_user(gw, "alice@example.com", "second");
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"delivered":5,"held":1}"#)
        );
        for tab in &mut tabs {
            tab.expect_line("direct second", "the open tabs");
        }
        let mut back = upgrade(
            gw.addr,
            "alice back",
            &Upgrade::bearer(&alice_token).cookie(&id),
        )
        .unwrap_or_else(|r| panic!("resume refused: {}", r.head));
        assert_eq!(back.state, "resumed");
        back.expect_line("direct second", "the resumed tab gets what it missed");
        back.expect_quiet(QUIET, "once");
    });
}
