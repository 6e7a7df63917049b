//! The session id is a bearer secret (DESIGN §6): whoever presents it
//! resumes that session. Through every path that names a session — hello,
//! join, leave, members, takeover, a sticky miss, a resume, debug logs and
//! `/metrics` — only peer ids appear; the session id travels only in the
//! `Set-Cookie` of the 101 and the client's own `Cookie`.

mod common;
mod gw;

use std::time::Duration;

use common::{for_each_driver, make_uuid_v4};
use gw::{args, topic, wait_open_connections, Client, Event};

#[test]
fn no_frame_log_line_or_metric_carries_a_session_id() {
    for_each_driver(&args(&["--log-level", "debug"]), |gw| {
        let t = topic("secret");
        let mut a = Client::new(gw, "A");
        let mut b = Client::new(gw, "B");
        a.sub(&t);
        b.sub(&t);
        let mut seen = vec![a.hello.clone(), b.hello.clone()];
        seen.push(a.line("B's join"));
        let members = a.who(&t);
        assert_eq!(members.len(), 2);
        seen.extend(members);
        let (a_id, b_id) = (a.id.clone(), b.id.clone());

        // A takeover, a drop and a resume, a sticky miss, a leave.
        let a2 = Client::resume(gw, "A(takeover)", &a_id);
        seen.push(a2.hello.clone());
        a.expect_server_close(1008, "replaced", "the taken-over socket");
        a2.drop_tcp();
        wait_open_connections(gw, 1, "after A dropped");
        let mut a3 = Client::resume(gw, "A(resume)", &a_id);
        seen.push(a3.hello.clone());
        let foreign = make_uuid_v4();
        let c = Client::connect(gw, "C(unknown cookie)", Some(&foreign));
        seen.push(c.hello.clone());
        a3.unsub(&t);
        seen.push(b.line("A's leave"));
        b.publish(&t, "after", true);
        for x in [&mut a3, &mut b] {
            let (events, _) = x.drain_to_end(Duration::from_millis(200));
            for e in events {
                if let Event::Text(l) = e {
                    seen.push(l);
                }
            }
        }

        let ids = [a_id, b_id, c.id.clone(), foreign];
        let logs = gw.logs();
        assert!(
            logs.iter().any(|l| l.contains("event=sticky_miss")),
            "the unknown cookie was logged as a sticky miss"
        );
        let metrics = gw.admin_get("/metrics").body_str();
        for id in &ids {
            for line in &seen {
                assert!(
                    !line.contains(id.as_str()),
                    "a session id in a frame: {line:?}"
                );
            }
            for line in &logs {
                assert!(
                    !line.contains(id.as_str()),
                    "a session id in a log line: {line:?}"
                );
            }
            assert!(!metrics.contains(id.as_str()), "a session id in /metrics");
        }
    });
}
