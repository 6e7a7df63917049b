//! Auth is off unless asked for (DESIGN §11): a bare `wsgate` (built with
//! the `auth` feature) keeps the open behaviour — no token needed, any
//! topic, the four-word `hello` and bare peer ids in presence — and says so
//! once in its log (`event=auth_off`, not once per core). With an auth
//! flag, no such line.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::Duration;

use auth::client::{upgrade, Upgrade};
use auth::*;
use common::{for_each_driver, wait_until};

#[test]
fn a_bare_gateway_is_open_and_logs_auth_off_once() {
    // `Gateway::start` runs two cores.
    for_each_driver(&gw::args(&[]), |gw| {
        assert!(
            wait_until(Duration::from_secs(2), || !events(gw, "auth_off")
                .is_empty()),
            "[{}] no `event=auth_off` line",
            gw.driver.name()
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            events(gw, "auth_off").len(),
            1,
            "[{}] `event=auth_off` once, not per core",
            gw.driver.name()
        );
        let t = gw::topic("open");
        let mut a = upgrade(gw.addr, "a", &Upgrade::new())
            .unwrap_or_else(|r| panic!("auth off: refused:\n{}", r.head));
        let mut b = upgrade(gw.addr, "b", &Upgrade::new())
            .unwrap_or_else(|r| panic!("auth off: refused:\n{}", r.head));
        assert_eq!(a.hello, format!("hello {} new {}", a.peer, gw::NODE));
        assert_eq!(a.user, None);
        assert_eq!(a.sub(&t), 0);
        assert_eq!(b.sub(&t), 0);
        a.expect_line(&format!("join {t} {}", b.peer), "a bare join");
        let mut members = vec![a.peer.clone(), b.peer.clone()];
        members.sort();
        assert_eq!(a.who(&t), members, "bare peer ids");
        assert_eq!(b.publish_own(&t, "anyone may"), 1);
        a.expect_line(&format!("msg {t} 1 anyone may"), "the message");
        // A token is simply ignored.
        let c = upgrade(gw.addr, "c", &Upgrade::bearer("whatever"))
            .unwrap_or_else(|r| panic!("auth off with a token: refused:\n{}", r.head));
        assert_eq!(c.user, None);
        a.close();
        b.close();
        c.close();
    });
}

#[test]
fn with_auth_on_there_is_no_auth_off_line() {
    let keys = Keys::new();
    let gw = common::Gateway::start(
        common::Driver::IoUring,
        &strs(&gw_args(&["--jwt-secret-file", &keys.secret_file])),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        events(&gw, "auth_off").is_empty(),
        "auth is on, yet: {:?}",
        events(&gw, "auth_off")
    );
    gw.assert_healthy();
}
