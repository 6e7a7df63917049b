//! `--redis`: where Redis is, parsed from a `redis://` or `rediss://` URL.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Where Redis is: `redis[s]://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `rediss://`: TLS (feature `redis-tls`).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (6379 by default).
    pub port: u16,
    /// ACL user (`AUTH user password`), if given.
    pub user: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
    /// Database number (`SELECT`).
    pub db: u32,
}

impl RedisTarget {
    /// Parses a `redis://` or `rediss://` URL (whether this build has TLS
    /// is checked by the caller).
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let (tls, rest) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(
                    "expected redis://[[user]:password@]host[:port][/db] or rediss://… (TLS)"
                        .into(),
                )
            }
        };
        let (auth, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| percent_decode(u)).transpose()?,
                    Some(percent_decode(p)?),
                ),
                // `redis://secret@host` is a password, as redis-cli reads it.
                None => (None, Some(percent_decode(a)?)),
            },
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse()
                    .map_err(|_| format!("database {db:?} is not a number"))?,
            ),
            None => (hostpart, 0),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        let port = match port {
            None => 6379,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port {p:?} is not a port number"))?,
        };
        Ok(RedisTarget {
            tls,
            host: host.to_string(),
            port,
            user,
            password,
            db,
        })
    }

    /// The address to connect to. A name is resolved on every attempt (it
    /// may move); this blocks the core briefly, once per reconnect.
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
    }
}

impl std::fmt::Display for RedisTarget {
    /// The URL without its password (for logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", if self.tls { "rediss://" } else { "redis://" })?;
        if self.password.is_some() {
            write!(f, "{}:***@", self.user.as_deref().unwrap_or(""))?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent escape in the user or password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "user or password is not UTF-8 once decoded".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> RedisTarget {
        RedisTarget::parse(url).unwrap()
    }

    #[test]
    fn parses_the_url_forms_users_write() {
        let plain = t("redis://127.0.0.1:6380");
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.db),
            ("127.0.0.1", 6380, 0)
        );
        assert_eq!((plain.user, plain.password), (None, None));
        let d = t("redis://cache.internal/3");
        assert_eq!((d.host.as_str(), d.port, d.db), ("cache.internal", 6379, 3));
        let pw = t("redis://:s%40cret@10.0.0.5:6379/1");
        assert_eq!(
            (pw.user.as_deref(), pw.password.as_deref()),
            (None, Some("s@cret"))
        );
        let acl = t("redis://app:pw@h:1");
        assert_eq!(
            (acl.user.as_deref(), acl.password.as_deref()),
            (Some("app"), Some("pw"))
        );
        let bare = t("redis://secret@h");
        assert_eq!(bare.password.as_deref(), Some("secret"));
        let v6 = t("redis://[::1]:7000/2");
        assert_eq!((v6.host.as_str(), v6.port, v6.db), ("::1", 7000, 2));
        assert_eq!(v6.to_string(), "redis://[::1]:7000/2");
        assert_eq!(pw.to_string(), "redis://:***@10.0.0.5:6379/1");
        assert!(!pw.tls);
        let tls = t("rediss://:pw@master.abc.cache.amazonaws.com:6379");
        assert!(tls.tls);
        assert_eq!(tls.host, "master.abc.cache.amazonaws.com");
        assert_eq!(
            tls.to_string(),
            "rediss://:***@master.abc.cache.amazonaws.com:6379/0"
        );
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for bad in [
            "http://h",
            "redis:/h",
            "rediss://",
            "redis://",
            "redis://h:0",
            "redis://h:port",
            "redis://h:6379/x",
            "redis://[::1",
            "redis://:%zz@h",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
