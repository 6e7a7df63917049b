//! Where a Redis server is: `host:port`.

/// `host:port` of a server (`[v6]:port` too): a sentinel, a cluster node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port` (the port is required).
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let text = text.trim();
        let (host, port) = if let Some(v6) = text.strip_prefix('[') {
            let (h, after) = v6.split_once("]:").ok_or("expected [address]:port")?;
            (h, after)
        } else {
            text.rsplit_once(':').ok_or("expected host:port")?
        };
        if host.is_empty() {
            return Err(format!("{text:?}: missing host"));
        }
        let port = (port.parse().ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port number"))?;
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("10.0.0.7:26379").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.7", 26379));
        let v6 = Endpoint::parse(" [::1]:26380").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 26380));
        assert_eq!(v6.to_string(), "[::1]:26380");
        for bad in ["h", ":1", "h:0", "h:x", "[::1]", "[::1]26379"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
