//! Topic permissions (DESIGN §11): `--allow-sub` / `--allow-pub` patterns
//! (a topic, or a prefix ending in `*`; `{user}` is the token's `sub`) plus
//! the token's `"wsgate": {"sub": [...], "pub": [...]}` claim. Outside them,
//! `sub` / `pub` / `who` get exactly `err 403 <cmd> <topic> forbidden` and
//! nothing else happens: no subscription, no presence line, nothing
//! published (no sequence number taken), the connection stays open. `who`
//! follows `sub`. With auth on, presence names the user:
//! `join <topic> <peer> <user>`, `members <topic> <n> <peer>:<user>...`.
//! The admin publish API is not subject to the patterns.

#![cfg(feature = "auth")]

mod auth;
mod common;
mod gw;

use std::time::Duration;

use auth::client::{upgrade, Upgrade, Ws};
use auth::*;
use common::for_each_driver;
use gw::{api_publish, topic};

const QUIET: Duration = Duration::from_millis(300);

fn connect(gw: &common::Gateway, name: &str, token: &str) -> Ws {
    let ws = upgrade(gw.addr, name, &Upgrade::bearer(token))
        .unwrap_or_else(|r| panic!("{name}: refused:\n{}{}", r.head, r.body));
    assert_eq!(
        ws.hello,
        format!("hello {} new {} {name}", ws.peer, gw::NODE),
        "{name}: the hello names the user"
    );
    ws
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn flags_and_claims_grant_topics_and_nothing_else() {
    let keys = Keys::new();
    let args = gw_args(&[
        "--jwt-secret-file",
        &keys.secret_file,
        "--allow-sub",
        "public.*",
        "--allow-sub",
        "user:{user}",
        "--allow-pub",
        "chat.*",
    ]);
    for_each_driver(&strs(&args), |gw| {
        let alice_token = hs256(&claims_with(
            "alice",
            300,
            &["room.a*"],
            &["room.a*", "user:{user}"],
        ));
        let bob_token = hs256(&claims("bob", 300));
        let mut alice = connect(gw, "alice", &alice_token);
        let mut bob = connect(gw, "bob", &bob_token);
        let public = topic("public");
        let chat = topic("chat");
        let room = topic("room.a");

        // Flag patterns, with presence naming the user.
        assert_eq!(alice.sub(&public), 0);
        assert_eq!(bob.sub(&public), 0);
        alice.expect_line(
            &format!("join {public} {} bob", bob.peer),
            "alice sees bob join, with his user",
        );
        let both = sorted(vec![alice.member(), bob.member()]);
        assert_eq!(alice.who(&public), both, "members are <peer>:<user>");
        assert_eq!(bob.who(&public), both);

        // `user:{user}`: each user's own topic only.
        assert_eq!(alice.sub("user:alice"), 0);
        bob.sub_forbidden("user:alice");
        assert_eq!(bob.sub("user:bob"), 0);
        bob.roundtrip("who user:alice", "err 403 who user:alice forbidden");
        assert_eq!(alice.who("user:alice"), vec![alice.member()]);
        alice.sub_forbidden("user:bob");

        // The claim: alice's grants are hers only.
        assert_eq!(alice.sub(&room), 0);
        bob.sub_forbidden(&room);
        bob.roundtrip(
            &format!("who {room}"),
            &format!("err 403 who {room} forbidden"),
        );
        alice.sub_forbidden("room.b1");
        alice.sub_forbidden("other");

        // Publishing: the flag's pattern and the claim's.
        assert_eq!(alice.publish(&chat, "from alice"), 1);
        assert_eq!(bob.publish(&chat, "from bob"), 2);
        alice.roundtrip(
            &format!("pub {public} not allowed"),
            &format!("err 403 pub {public} forbidden"),
        );
        // Binary form: the same refusal.
        let mut bin = format!("pub {public}\n").into_bytes();
        bin.extend_from_slice(&[0, 1, 2, 255]);
        alice.send_binary(&bin);
        alice.expect_line(
            &format!("err 403 pub {public} forbidden"),
            "a forbidden binary pub",
        );
        bob.expect_quiet(QUIET, "nothing was published to the public topic");
        // The refused publishes took no sequence number; the admin API is
        // not subject to the patterns.
        assert_eq!(api_publish(gw, &public, b"from the api", false), 1);
        alice.expect_line(&format!("msg {public} 1 from the api"), "the api's publish");
        bob.expect_line(&format!("msg {public} 1 from the api"), "the api's publish");

        alice.send_text(&format!("pub {room} to my room"));
        alice.expect_line(&format!("msg {room} 1 to my room"), "her own message");
        alice.expect_line(&format!("ok pub {room} 1"), "the claim grants pub");
        alice.send_text("pub user:alice note to self");
        alice.expect_line("msg user:alice 1 note to self", "her own topic");
        alice.expect_line("ok pub user:alice 1", "pub user:{user} from the claim");
        alice.roundtrip("pub user:bob hi", "err 403 pub user:bob forbidden");
        bob.roundtrip("pub user:bob hi", "err 403 pub user:bob forbidden");
        bob.expect_quiet(QUIET, "nothing reached user:bob");

        // The admin API reaches a topic no client may publish to.
        assert_eq!(api_publish(gw, "user:bob", b"for bob", false), 1);
        bob.expect_line("msg user:bob 1 for bob", "the api's publish to user:bob");

        // A refused `sub` made no subscription and no presence: alice's own
        // topic has only her, and a publish there does not reach bob.
        assert_eq!(bob.who("public.none"), Vec::<String>::new());
        assert_eq!(alice.who("user:alice"), vec![alice.member()]);
        alice.send_text("pub user:alice second");
        alice.expect_line("msg user:alice 2 second", "her own topic");
        alice.expect_line("ok pub user:alice 2", "pub on her own topic");
        alice.expect_quiet(QUIET, "alice: nothing pending");
        bob.expect_quiet(QUIET, "bob: no join, no message from refused commands");

        // Still open and serving after every refusal.
        bob.roundtrip(&format!("unsub {public}"), &format!("ok unsub {public}"));
        alice.expect_line(
            &format!("leave {public} {} bob", bob.peer),
            "alice sees bob leave, with his user",
        );
        let secrets = [
            token_secrets(&alice_token),
            token_secrets(&bob_token),
            vec![alice.id.clone(), bob.id.clone()],
        ]
        .concat();
        alice.close();
        bob.close();
        assert_no_secrets(gw, &secrets);
    });
}

#[test]
fn without_patterns_nothing_is_allowed_and_who_follows_sub() {
    let keys = Keys::new();
    let args = gw_args(&["--jwt-secret-file", &keys.secret_file]);
    for_each_driver(&strs(&args), |gw| {
        // No flags, no claim: nothing.
        let carol_token = hs256(&claims("carol", 300));
        let mut carol = connect(gw, "carol", &carol_token);
        carol.sub_forbidden("x.1");
        carol.roundtrip("pub x.1 hi", "err 403 pub x.1 forbidden");
        carol.roundtrip("who x.1", "err 403 who x.1 forbidden");

        // sub only: who follows it, pub does not.
        let dave_token = hs256(&claims_with("dave", 300, &["x.*"], &[]));
        let mut dave = connect(gw, "dave", &dave_token);
        assert_eq!(dave.sub("x.1"), 0);
        assert_eq!(dave.who("x.1"), vec![dave.member()]);
        dave.roundtrip("pub x.1 hi", "err 403 pub x.1 forbidden");

        // pub only: no who, no sub.
        let erin_token = hs256(&claims_with("erin", 300, &[], &["x.1"]));
        let mut erin = connect(gw, "erin", &erin_token);
        erin.roundtrip("who x.1", "err 403 who x.1 forbidden");
        erin.sub_forbidden("x.1");
        assert_eq!(erin.publish("x.1", "from erin"), 1);
        dave.expect_line("msg x.1 1 from erin", "erin may publish to x.1");
        erin.roundtrip("pub x.2 hi", "err 403 pub x.2 forbidden");

        // `*` in a claim: every topic.
        let frank_token = hs256(&claims_with("frank", 300, &["*"], &["*"]));
        let mut frank = connect(gw, "frank", &frank_token);
        assert_eq!(frank.sub("anything.at-all"), 0);
        assert_eq!(frank.publish("x.1", "from frank"), 2);
        dave.expect_line("msg x.1 2 from frank", "frank may publish anywhere");

        // The admin API is not affected by the missing patterns.
        assert_eq!(api_publish(gw, "x.1", b"api", false), 3);
        dave.expect_line("msg x.1 3 api", "the api's publish");
        for (ws, n) in [
            (&mut carol, "carol"),
            (&mut dave, "dave"),
            (&mut erin, "erin"),
            (&mut frank, "frank"),
        ] {
            ws.expect_quiet(QUIET, &format!("{n}: nothing pending"));
        }
        let secrets = [
            token_secrets(&carol_token),
            token_secrets(&dave_token),
            token_secrets(&erin_token),
            token_secrets(&frank_token),
            vec![
                carol.id.clone(),
                dave.id.clone(),
                erin.id.clone(),
                frank.id.clone(),
            ],
        ]
        .concat();
        assert_no_secrets(gw, &secrets);
    });
}
