//! `--redis redis://[user[:password]@|:password@]host:port[/db]`: a node
//! authenticates with a password alone (`requirepass`) or as an ACL user,
//! works in the database the URL names, and keeps to the `wsgate:` key
//! space (the ACL user may touch no other key). Two nodes, one with each
//! form, fan out to each other.

mod common;
mod edge;
mod gw;
mod redis;

use common::Driver;
use redis::*;
use std::time::Duration;

const PASS: &str = "url-test-pass";
const DB: u32 = 3;

#[test]
fn password_acl_user_and_db_from_the_url() {
    let Some(redis) = RedisServer::start_with(&["--requirepass", PASS], Some(PASS)) else {
        return;
    };
    // An ACL user limited to keys under `wsgate:` (any channel, any command).
    redis.cmd(&[
        "ACL",
        "SETUSER",
        "gw",
        "on",
        ">gw-secret",
        "~wsgate:*",
        "&*",
        "+@all",
    ]);
    let port = redis.port;
    let a = start_node(
        "auth-a",
        Driver::IoUring,
        &format!("redis://:{PASS}@127.0.0.1:{port}/{DB}"),
        &[],
    );
    let b = start_node(
        "auth-b",
        Driver::Legacy,
        &format!("redis://gw:gw-secret@127.0.0.1:{port}/{DB}"),
        &[],
    );
    wait_redis_up(&a, "auth-a", 1.0, Duration::from_secs(10));
    wait_redis_up(&b, "auth-b", 1.0, Duration::from_secs(10));
    // The URL's credentials are not written to the logs.
    for (gw, n) in [(&a, "auth-a"), (&b, "auth-b")] {
        for l in gw.logs() {
            assert!(
                !l.contains(PASS) && !l.contains("gw-secret"),
                "{n} logged a Redis password: {l}"
            );
        }
    }

    let t = topic("auth");
    let mut x = Ws::fresh(a.addr, "x@a");
    let mut y = Ws::fresh(b.addr, "y@b");
    assert_eq!(x.sub(&t), 0);
    assert_eq!(y.sub(&t), 0);
    pub_across(&mut x, &mut y, &t, "a-to-b");
    pub_across(&mut y, &mut x, &t, "b-to-a");

    let keys = redis.keys(DB);
    assert!(!keys.is_empty(), "nothing stored in db {DB}");
    let foreign: Vec<&String> = keys.iter().filter(|k| !k.starts_with("wsgate:")).collect();
    assert!(foreign.is_empty(), "keys outside `wsgate:`: {foreign:?}");
    assert_eq!(
        redis.keys(0),
        Vec::<String>::new(),
        "the URL names db {DB}: db 0 must stay empty"
    );
    a.assert_healthy();
    b.assert_healthy();
}
