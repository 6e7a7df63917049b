//! Request targets in absolute form (RFC 9112 §3.2.2: "a server MUST accept
//! the absolute-form in requests"): `GET http://host/ws HTTP/1.1` upgrades
//! as `GET /ws` does, health and the cookie route answer too. The query is
//! split off before routing in both forms, and never reaches a log line (it
//! may carry a token).

mod common;

use common::{
    assert_101, for_each_driver, Req, DEFAULT_COOKIE_ATTRS, DEFAULT_COOKIE_NAME, RFC_KEY,
};

const SECRET: &str = "q-3f1d9b7a-secret-value";

#[test]
fn absolute_form_upgrades_and_answers_like_origin_form() {
    for_each_driver(&["--log-level", "debug"], |gw| {
        let host = format!("127.0.0.1:{}", gw.addr.port());
        for target in [
            format!("http://{host}/ws"),
            format!("http://{host}/ws?token={SECRET}"),
            format!("/ws?token={SECRET}"),
        ] {
            let mut c = gw.connect();
            let req = Req::upgrade(&target);
            c.send(&req.bytes());
            let resp = c.read_head();
            assert_101(&resp, RFC_KEY, DEFAULT_COOKIE_NAME, DEFAULT_COOKIE_ATTRS);
        }
        let health = gw.roundtrip(&Req::get(&format!("http://{host}/ws-health")).bytes());
        assert_eq!(health.status, 200, "absolute-form health:\n{}", health.head);
        let missing =
            gw.roundtrip(&Req::get(&format!("http://{host}/nope?token={SECRET}")).bytes());
        assert_eq!(missing.status, 404);
        let logs = gw.logs();
        assert!(
            logs.iter().all(|l| !l.contains(SECRET)),
            "a query string reached the logs: {:?}",
            logs.iter()
                .filter(|l| l.contains(SECRET))
                .collect::<Vec<_>>()
        );
    });
}
