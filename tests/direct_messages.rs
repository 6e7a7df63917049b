//! `POST /send/session/<id>` and `POST /send/user/<user>` on the admin
//! listener (DESIGN §12): a `direct` line (or binary frame) for one session
//! or for every session of a user; the answer counts who got it; a
//! disconnected session gets it on resume, after its topics' replay, within
//! `--history-size` (then `gap direct <from> <to>`); refusals as for
//! publish; the session id, a bearer secret, is never logged.

mod common;
mod gw;

use common::for_each_driver;
use gw::{admin_request, api_publish, args, metric, topic, Client, Event, TOKEN};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// POSTs `body` to `path`: (status, body).
fn post(gw: &common::Gateway, path: &str, body: &[u8], binary: bool) -> (u16, String) {
    let auth = bearer();
    let mut headers = vec![("Authorization", auth.as_str())];
    if binary {
        headers.push(("Content-Type", "application/octet-stream"));
    }
    let r = admin_request(gw, "POST", path, &headers, Some(body));
    if r.status == 200 || r.status == 404 {
        assert!(
            r.head.contains("Content-Type: application/json"),
            "{path}: JSON answer expected:\n{}",
            r.head
        );
    }
    (r.status, r.body.trim_end().to_string())
}

#[test]
fn a_direct_message_reaches_one_session_text_or_binary() {
    let a = args(&["--publish-token", TOKEN, "--max-message-size", "4KiB"]);
    for_each_driver(&a, |gw| {
        let mut alice = Client::new(gw, "alice");
        let mut bob = Client::new(gw, "bob");
        let path = format!("/send/session/{}", alice.id);

        let (status, body) = post(gw, &path, b"hello alice", false);
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"delivered":1,"held":0}"#)
        );
        alice.expect_line("direct hello alice", "the direct message");
        bob.expect_quiet(QUIET, "bob gets none of alice's direct messages");

        let raw: Vec<u8> = vec![0, 1, b'\n', 0xff, 0x80];
        assert_eq!(post(gw, &path, &raw, true).0, 200);
        match alice.next("the binary direct message") {
            Event::Binary(data) => {
                let mut want = b"direct\n".to_vec();
                want.extend_from_slice(&raw);
                assert_eq!(data, want);
            }
            other => panic!("expected a binary frame, got {other:?}"),
        }

        // Nobody holds this session: 404, nothing kept.
        let nobody = "6f1c2d3e-4b5a-4c6d-8e7f-8091a2b3c4d5";
        let (status, body) = post(gw, &format!("/send/session/{nobody}"), b"x", false);
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"delivered":0,"held":0}"#)
        );

        // Refusals, as for publish.
        let r = admin_request(gw, "POST", &path, &[], Some(b"no token"));
        assert_eq!(r.status, 401, "no token");
        let wrong = format!("Bearer {}", TOKEN.replace('0', "9"));
        let r = admin_request(gw, "POST", &path, &[("Authorization", &wrong)], Some(b"x"));
        assert_eq!(r.status, 403, "wrong token");
        let auth = bearer();
        let h = [("Authorization", auth.as_str())];
        assert_eq!(admin_request(gw, "GET", &path, &h, None).status, 405);
        let r = admin_request(gw, "POST", "/send/session/not-a-uuid", &h, Some(b"x"));
        assert_eq!(r.status, 400, "a malformed session id: {}", r.body);
        let r = admin_request(gw, "POST", "/send/user/no spaces", &h, Some(b"x"));
        assert_eq!(r.status, 400, "a malformed user: {}", r.body);
        assert_eq!(admin_request(gw, "POST", &path, &h, None).status, 411);
        let big = vec![b'x'; 8 * 1024];
        assert_eq!(admin_request(gw, "POST", &path, &h, Some(&big)).status, 413);
        let r = admin_request(gw, "POST", &path, &h, Some(&[0xff, 0xfe]));
        assert_eq!(r.status, 400, "text must be UTF-8");
        alice.expect_quiet(QUIET, "no refused request reached alice");

        assert_eq!(metric(gw, "wsgate_direct_total{result=\"delivered\"}"), 2.0);
        assert_eq!(metric(gw, "wsgate_direct_total{result=\"none\"}"), 1.0);
        // The session id is a bearer secret: never in a log line.
        assert!(
            gw.logs().iter().all(|l| !l.contains(&alice.id)),
            "a session id reached the log"
        );
    });
}

#[test]
fn a_resume_gets_missed_direct_messages_after_the_topic_replay_or_a_gap() {
    let a = args(&["--publish-token", TOKEN, "--history-size", "2"]);
    for_each_driver(&a, |gw| {
        let t = topic("dm");
        let mut alice = Client::new(gw, "alice");
        assert_eq!(alice.sub(&t), 0);
        let id = alice.id.clone();
        alice.drop_tcp();
        gw::wait_open_connections(gw, 0, "alice's socket is gone");
        let path = format!("/send/session/{id}");
        for i in 1..=3 {
            let (status, body) = post(gw, &path, format!("d{i}").as_bytes(), false);
            assert_eq!(
                (status, body.as_str()),
                (404, r#"{"delivered":0,"held":1}"#),
                "nobody connected, kept for the resume"
            );
        }
        assert_eq!(api_publish(gw, &t, b"m1", false), 1);
        let mut back = Client::resume(gw, "alice again", &id);
        back.expect_line(&format!("msg {t} 1 m1"), "the topic's replay first");
        back.expect_line("gap direct 1 1", "d1 fell out of --history-size 2");
        back.expect_line("direct d2", "then the kept ones, in order");
        back.expect_line("direct d3", "then the kept ones, in order");
        back.expect_quiet(QUIET, "each once");
        assert_eq!(post(gw, &path, b"live", false).0, 200);
        back.expect_line("direct live", "live again");
        assert_eq!(metric(gw, "wsgate_direct_total{result=\"held\"}"), 3.0);
    });
}
