//! Redis Sentinel (`--redis-sentinel`, `--redis-sentinel-master`), sans-IO:
//! the sentinels' addresses, the questions asked and the answers read.
//!
//! A core asks the sentinels in turn `SENTINEL get-master-addr-by-name
//! <name>` for the primary, connects there and checks with `ROLE` that it
//! is one (a sentinel's answer may be stale right after a failover); then it
//! keeps a connection to that sentinel subscribed to `+switch-master`, so a
//! failover is followed as soon as Sentinel announces it (the connection to
//! the old primary is dropped and the new one asked for).

pub use crate::config::Endpoint;
use crate::proto::resp::Value;

/// The channel Sentinel announces a failover on.
pub const SWITCH_MASTER: &str = "+switch-master";

/// The question for the primary of `master`.
pub fn ask_primary(master: &str) -> [&str; 3] {
    ["SENTINEL", "get-master-addr-by-name", master]
}

/// The answer to [`ask_primary`]: the primary's address, or `None` when
/// this sentinel does not know the name (nil) or said something else.
pub fn primary_of(answer: &Value) -> Option<Endpoint> {
    let Value::Array(items) = answer else {
        return None;
    };
    let [host, port] = &items[..] else {
        return None;
    };
    let host = std::str::from_utf8(host.as_bytes()?).ok()?;
    let port = std::str::from_utf8(port.as_bytes()?).ok()?;
    Endpoint::parse(&format!("{host}:{port}"))
        .ok()
        .or_else(|| Endpoint::parse(&format!("[{host}]:{port}")).ok())
}

/// Whether the answer to `ROLE` says the server is a primary.
pub fn is_primary(role: &Value) -> bool {
    let Value::Array(items) = role else {
        return false;
    };
    (items.first()).and_then(Value::as_bytes) == Some(b"master")
}

/// The role `ROLE` names (for the error when it is not a primary).
pub fn role_name(role: &Value) -> String {
    let name = match role {
        Value::Array(items) => items.first().and_then(Value::as_bytes),
        _ => None,
    };
    name.map_or_else(
        || "unknown".into(),
        |n| String::from_utf8_lossy(n).into_owned(),
    )
}

/// A `+switch-master` message for `master`: the new primary. The message
/// is `<name> <old-ip> <old-port> <new-ip> <new-port>`, as a RESP2 array
/// (`message`, channel, data) or a RESP3 push.
pub fn switched(value: &Value, master: &str) -> Option<Endpoint> {
    let (Value::Array(items) | Value::Push(items)) = value else {
        return None;
    };
    let [kind, channel, data] = &items[..] else {
        return None;
    };
    if kind.as_bytes()? != b"message" || channel.as_bytes()? != SWITCH_MASTER.as_bytes() {
        return None;
    }
    let data = std::str::from_utf8(data.as_bytes()?).ok()?;
    let f: Vec<&str> = data.split(' ').collect();
    let [name, _, _, ip, port] = f[..] else {
        return None;
    };
    if name != master {
        return None;
    }
    primary_of(&Value::Array(vec![
        Value::Bulk(ip.as_bytes().to_vec()),
        Value::Bulk(port.as_bytes().to_vec()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::resp::parse;

    fn value(bytes: &[u8]) -> Value {
        parse(bytes).unwrap().unwrap().0
    }

    #[test]
    fn the_primary_from_sentinels_answer() {
        let a = value(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
        let e = primary_of(&a).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 6380));
        let v6 = value(b"*2\r\n$3\r\n::1\r\n$4\r\n6380\r\n");
        assert_eq!(primary_of(&v6).unwrap().host, "::1");
        assert_eq!(primary_of(&value(b"*-1\r\n")), None);
        assert_eq!(primary_of(&value(b"_\r\n")), None);
        assert_eq!(primary_of(&value(b"-ERR no such master\r\n")), None);
        assert_eq!(primary_of(&value(b"*1\r\n$1\r\nx\r\n")), None);
    }

    #[test]
    fn role_says_primary_or_not() {
        let master = value(b"*3\r\n$6\r\nmaster\r\n:3129659\r\n*0\r\n");
        assert!(is_primary(&master));
        let replica = value(
            b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:9999\r\n$9\r\nconnected\r\n:3167038\r\n",
        );
        assert!(!is_primary(&replica));
        assert_eq!(role_name(&replica), "slave");
        assert!(!is_primary(&value(b"-NOPERM\r\n")));
    }

    #[test]
    fn switch_master_for_our_name_only() {
        let msg = value(
            b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$38\r\nmymaster 127.0.0.1 6380 127.0.0.1 6381\r\n",
        );
        let e = switched(&msg, "mymaster").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 6381));
        assert_eq!(switched(&msg, "other"), None);
        let push = value(
            b">3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$38\r\nmymaster 127.0.0.1 6380 127.0.0.1 6381\r\n",
        );
        assert!(switched(&push, "mymaster").is_some());
        let confirm = value(b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
        assert_eq!(switched(&confirm, "mymaster"), None);
        let short = value(b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$8\r\nmymaster\r\n");
        assert_eq!(switched(&short, "mymaster"), None);
    }
}
