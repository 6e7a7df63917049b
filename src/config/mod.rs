//! Command line and environment (DESIGN §2). Every flag can also be set with
//! `WSGATE_<FLAG>`. Bad configuration is one clear line and exit code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::proto::cookie::is_valid_cookie_name;
use crate::sys::is_name_byte;
use crate::sys::log::Level;

mod endpoint;
mod redis_url;
mod units;

pub use endpoint::Endpoint;
pub use redis_url::RedisTarget;
pub use units::{parse_duration, parse_size};

/// The built-in route that only sets the cookie (204).
pub const SESSION_PATH: &str = "/ws-session";

/// The longest `--ping-interval`: a connection keeps its heartbeat clocks
/// in the low 32 bits of the coarse ms clock, read as "how long ago", which
/// must stay under 2^31 ms (24 days) with the pong timeout on top.
pub const MAX_PING_INTERVAL: Duration = Duration::from_secs(10 * 86_400);

/// wsgate: a WebSocket gateway for fleets behind an L7 load balancer.
#[derive(Parser, Debug, Clone)]
#[command(name = "wsgate", version, about, long_about = None)]
pub struct Config {
    /// Client traffic address (the load balancer's target port).
    #[arg(long, env = "WSGATE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Metrics and admin address; never put it behind the load balancer.
    #[arg(long, env = "WSGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// Runtimes to run, one per CPU of the process's affinity mask, in order
    /// [default: all CPUs this process may use].
    #[arg(long, env = "WSGATE_CORES")]
    pub cores: Option<usize>,

    /// The gateway (pub/sub) WebSocket endpoint.
    #[arg(long, env = "WSGATE_WS_PATH", default_value = "/ws")]
    pub ws_path: String,

    /// An echo WebSocket endpoint for conformance tests and benchmarks [default: off].
    #[arg(long, env = "WSGATE_ECHO_PATH")]
    pub echo_path: Option<String>,

    /// Plain-HTTP health route: 200 when serving.
    #[arg(long, env = "WSGATE_HEALTH_PATH", default_value = "/ws-health")]
    pub health_path: String,

    /// Sticky cookie name; must equal the target group's `cookie_name`.
    #[arg(long, env = "WSGATE_COOKIE_NAME", default_value = "WS_SESSION_ID")]
    pub cookie_name: String,

    /// Cookie `Max-Age`.
    #[arg(long, env = "WSGATE_COOKIE_MAX_AGE", default_value = "86400s", value_parser = parse_duration)]
    pub cookie_max_age: Duration,

    /// `false` drops `Secure` and `SameSite=None` (plain-HTTP local use).
    #[arg(long, env = "WSGATE_COOKIE_SECURE", default_value_t = true, action = ArgAction::Set)]
    pub cookie_secure: bool,

    /// How long a disconnected session is kept for a resume.
    #[arg(long, env = "WSGATE_SESSION_TTL", default_value = "120s", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// The data path of open connections: `epoll` (a per-core epoll set),
    /// `uring` (a per-core io_uring ring: multishot receive into provided
    /// buffers), or `auto` (io_uring where the kernel allows it, else epoll;
    /// epoll too when MONOIO_FORCE_LEGACY_DRIVER is set). epoll by default
    /// until the ring measures faster (benches/README.md).
    #[arg(long, env = "WSGATE_IO", value_enum, default_value_t = IoChoice::Epoll)]
    pub io: IoChoice,

    /// Messages kept per topic for replay.
    #[arg(long, env = "WSGATE_HISTORY_SIZE", default_value_t = 128)]
    pub history_size: usize,

    /// Above this many members (live or resumable) a topic sends no
    /// join/leave lines and `who` answers the count only; 0: no presence lines.
    #[arg(long, env = "WSGATE_PRESENCE_MAX_MEMBERS", default_value_t = 1000)]
    pub presence_max_members: usize,

    /// A topic with no live and no resumable member is forgotten this long
    /// after its last member left or its last publish (its sequence restarts).
    #[arg(long, env = "WSGATE_TOPIC_TTL", default_value = "60s", value_parser = parse_duration)]
    pub topic_ttl: Duration,

    /// Bearer token for `POST /publish/<topic>` on the admin port [default: publish API off].
    #[arg(long, env = "WSGATE_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Time from SIGTERM to exit; keep it below the balancer's
    /// `deregistration_delay` and the orchestrator's grace period.
    #[arg(long, env = "WSGATE_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// A connection silent this long gets a ping; keep it below the balancer's idle timeout.
    #[arg(long, env = "WSGATE_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// No pong or data this long after a ping closes the connection.
    #[arg(long, env = "WSGATE_PONG_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub pong_timeout: Duration,

    /// Time allowed for a client to send its request head.
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Open WebSocket connections per node; beyond, upgrades get 503.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// permessage-deflate (RFC 7692), agreed with clients that offer it:
    /// `on` or `off` [default: on; a build without the `compression`
    /// feature has none].
    #[arg(long, env = "WSGATE_COMPRESSION", value_enum)]
    pub compression: Option<Switch>,

    /// Messages smaller than this go out uncompressed [default: 256B].
    #[arg(long, env = "WSGATE_COMPRESSION_MIN_SIZE", value_parser = parse_size)]
    pub compression_min_size: Option<usize>,

    /// Largest message accepted (as sent, and once inflated); beyond, close 1009.
    #[arg(long, env = "WSGATE_MAX_MESSAGE_SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_message_size: usize,

    /// Bytes queued for one peer (pongs included) before it is no longer
    /// read from (echo) or is closed as a slow consumer (fan-out).
    #[arg(long, env = "WSGATE_MAX_BACKPRESSURE", default_value = "1MiB", value_parser = parse_size)]
    pub max_backpressure: usize,

    /// Browser origins allowed to connect, repeatable; `*` allows any
    /// [default: same-origin only; requests without `Origin` pass].
    #[arg(long, env = "WSGATE_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,

    /// Redis as the shared engine for sessions, topic history and cross-node
    /// fan-out: redis://[[user]:password@]host[:port][/db], or rediss://…
    /// for TLS [default: none, one node in memory].
    #[arg(long, env = "WSGATE_REDIS", hide_env_values = true)]
    pub redis: Option<String>,

    /// With rediss://: a PEM file of the CAs to trust instead of the public
    /// roots (a private CA).
    #[arg(long, env = "WSGATE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<String>,

    /// With rediss://: the name the server's certificate must carry, when it
    /// is not the URL's host (e.g. the host is an address).
    #[arg(long, env = "WSGATE_REDIS_TLS_SERVER_NAME")]
    pub redis_tls_server_name: Option<String>,

    /// With rediss://: do NOT verify the server's certificate (encrypted,
    /// not authenticated; logged as a warning at start).
    #[arg(long, env = "WSGATE_REDIS_TLS_INSECURE")]
    pub redis_tls_insecure: bool,

    /// --redis names a node of a Redis Cluster (Valkey cluster mode,
    /// MemoryDB): the slot map is read from it, each request goes to the
    /// primary of its slot, topics use sharded pub/sub (Redis >= 7).
    #[arg(long, env = "WSGATE_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Sentinels to ask for the primary, comma-separated host:port (with
    /// --redis-sentinel-master); --redis then gives only the credentials,
    /// database and scheme [default: none, --redis is the server].
    #[arg(long, env = "WSGATE_REDIS_SENTINEL", value_delimiter = ',')]
    pub redis_sentinel: Vec<String>,

    /// The name the sentinels monitor the primary under.
    #[arg(long, env = "WSGATE_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,

    /// Longest wait for Redis (connect, any answer); beyond it the node serves
    /// locally and reconnects.
    #[arg(long, env = "WSGATE_REDIS_TIMEOUT", default_value = "500ms", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// Node name in logs and metrics [default: hostname].
    #[arg(long, env = "WSGATE_NODE_ID")]
    pub node_id: Option<String>,

    /// error, warn, info or debug.
    #[arg(long, env = "WSGATE_LOG_LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: Level,

    /// HS256 tokens: a file holding the shared secret (at least 32 bytes;
    /// a trailing newline is ignored). Turns authentication on.
    #[arg(long, env = "WSGATE_JWT_SECRET_FILE", help_heading = "Authentication")]
    pub jwt_secret_file: Option<PathBuf>,

    /// RS256 or ES256 tokens: a PEM public key file (the algorithm follows
    /// the key). Turns authentication on.
    #[arg(
        long,
        env = "WSGATE_JWT_PUBLIC_KEY_FILE",
        help_heading = "Authentication"
    )]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Tokens signed by any key of a JWKS document (chosen by the token's
    /// `kid`); the file is re-read when it changes. Turns authentication on.
    #[arg(long, env = "WSGATE_JWT_JWKS_FILE", help_heading = "Authentication")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// When set, a token's `iss` must equal it.
    #[arg(long, env = "WSGATE_JWT_ISSUER", help_heading = "Authentication")]
    pub jwt_issuer: Option<String>,

    /// When set, a token's `aud` must contain it.
    #[arg(long, env = "WSGATE_JWT_AUDIENCE", help_heading = "Authentication")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on `exp` and `nbf` [default: 5s].
    #[arg(long, env = "WSGATE_JWT_LEEWAY", value_parser = parse_duration, help_heading = "Authentication")]
    pub jwt_leeway: Option<Duration>,

    /// Topics every authenticated user may subscribe to (and ask `who`
    /// on), repeatable: a topic, or a prefix ending in `*`; `{user}` is the
    /// user id [default: none; with authentication off, all].
    #[arg(
        long,
        env = "WSGATE_ALLOW_SUB",
        value_delimiter = ',',
        help_heading = "Authentication"
    )]
    pub allow_sub: Vec<String>,

    /// Topics every authenticated user may publish to, repeatable (as
    /// --allow-sub).
    #[arg(
        long,
        env = "WSGATE_ALLOW_PUB",
        value_delimiter = ',',
        help_heading = "Authentication"
    )]
    pub allow_pub: Vec<String>,

    /// The backend decides who connects: http://host:port/path gets a JSON
    /// POST per upgrade (after the token check, if any). Turns
    /// authentication on.
    #[arg(long, env = "WSGATE_AUTH_HOOK", help_heading = "Authentication")]
    pub auth_hook: Option<String>,

    /// A hook that does not answer in time (or is down) means 503 [default: 2s].
    #[arg(long, env = "WSGATE_AUTH_HOOK_TIMEOUT", value_parser = parse_duration, help_heading = "Authentication")]
    pub auth_hook_timeout: Option<Duration>,

    /// Hook requests in flight per core; more wait (within the timeout) [default: 64].
    #[arg(
        long,
        env = "WSGATE_AUTH_HOOK_CONCURRENCY",
        help_heading = "Authentication"
    )]
    pub auth_hook_concurrency: Option<usize>,

    /// The application's backend hears from clients: http://host:port/path
    /// gets JSON batches of `connect`, `disconnect` and `send` events, and
    /// its answers to `send` go back to the client as `reply`.
    #[arg(long, env = "WSGATE_EVENTS_HOOK", help_heading = "Backend")]
    pub events_hook: Option<String>,

    /// How long `connect`/`disconnect` events are retried while the events
    /// hook fails, before they are dropped (and counted) [default: 30s].
    #[arg(long, env = "WSGATE_EVENTS_RETRY", value_parser = parse_duration, help_heading = "Backend")]
    pub events_retry: Option<Duration>,

    /// Events waiting for the hook per core; beyond it a client's `send`
    /// gets `err 503 busy` [default: 10000].
    #[arg(long, env = "WSGATE_EVENTS_QUEUE", help_heading = "Backend")]
    pub events_queue: Option<usize>,
}

impl Config {
    /// Parses the command line; on a bad one prints one line and exits 2.
    pub fn from_args() -> Config {
        let config = match Config::try_parse() {
            Ok(c) => c,
            Err(e) if !e.use_stderr() => e.exit(), // --help, --version
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                fail(first.trim_start_matches("error: "));
            }
        };
        if let Err(msg) = config.validate() {
            fail(&msg);
        }
        config
    }

    /// Where Redis is (`--redis`, already validated).
    pub fn redis_target(&self) -> Option<RedisTarget> {
        self.redis
            .as_deref()
            .and_then(|u| RedisTarget::parse(u).ok())
    }

    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_paths()?;
        self.validate_names()?;
        self.validate_limits()?;
        self.validate_redis()?;
        self.validate_auth()?;
        self.validate_events()?;
        self.validate_compression()
    }

    /// Whether permessage-deflate is agreed with clients that offer it.
    pub fn compression_on(&self) -> bool {
        cfg!(feature = "compression") && self.compression != Some(Switch::Off)
    }

    /// `--compression-min-size`, or its default.
    pub fn compression_min_size(&self) -> usize {
        self.compression_min_size.unwrap_or(256)
    }

    /// `--compression` and `--compression-min-size`: a build that has the
    /// feature, and a size that has something to apply to.
    fn validate_compression(&self) -> Result<(), String> {
        if !cfg!(feature = "compression") {
            let asked = if self.compression == Some(Switch::On) {
                Some("--compression on")
            } else {
                self.compression_min_size.map(|_| "--compression-min-size")
            };
            if let Some(flag) = asked {
                return Err(format!(
                    "{flag}: this wsgate was built without the `compression` feature (rebuild with default features to use permessage-deflate)"
                ));
            }
            return Ok(());
        }
        if self.compression == Some(Switch::Off) && self.compression_min_size.is_some() {
            return Err("--compression-min-size needs --compression on".into());
        }
        Ok(())
    }

    /// `--events-retry`, or its default.
    pub fn events_retry(&self) -> Duration {
        self.events_retry.unwrap_or(Duration::from_secs(30))
    }

    /// `--events-queue`, or its default.
    pub fn events_queue(&self) -> usize {
        self.events_queue.unwrap_or(10_000)
    }

    /// The events hook's flags: a build that has the feature, a URL the
    /// hook client can use, and what needs the hook.
    fn validate_events(&self) -> Result<(), String> {
        let set = [
            ("--events-hook", self.events_hook.is_some()),
            ("--events-retry", self.events_retry.is_some()),
            ("--events-queue", self.events_queue.is_some()),
        ];
        let first = set.iter().find(|(_, on)| *on).map(|(name, _)| *name);
        if !cfg!(feature = "backend") {
            if let Some(first) = first {
                return Err(format!(
                    "{first}: this wsgate was built without the `backend` feature (rebuild with default features to use the events hook)"
                ));
            }
            return Ok(());
        }
        let Some(url) = &self.events_hook else {
            if let Some(first) = first {
                return Err(format!("{first} needs --events-hook"));
            }
            return Ok(());
        };
        crate::proto::http_client::HookTarget::parse(url)
            .map_err(|e| format!("--events-hook: {e}"))?;
        if self.events_queue == Some(0) {
            return Err("--events-queue must be at least 1".into());
        }
        Ok(())
    }

    /// Whether upgrades on the gateway path must authenticate (any token
    /// key, or the hook).
    pub fn auth_on(&self) -> bool {
        self.jwt_secret_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_file.is_some()
            || self.auth_hook.is_some()
    }

    /// `--jwt-leeway`, or its default.
    pub fn jwt_leeway(&self) -> Duration {
        self.jwt_leeway.unwrap_or(Duration::from_secs(5))
    }

    /// `--auth-hook-timeout`, or its default.
    pub fn auth_hook_timeout(&self) -> Duration {
        self.auth_hook_timeout.unwrap_or(Duration::from_secs(2))
    }

    /// `--auth-hook-concurrency`, or its default.
    pub fn auth_hook_concurrency(&self) -> usize {
        self.auth_hook_concurrency.unwrap_or(64)
    }

    /// The authentication flags that are set, by name.
    fn auth_flags_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let flags: [(&'static str, bool); 11] = [
            ("--jwt-secret-file", self.jwt_secret_file.is_some()),
            ("--jwt-public-key-file", self.jwt_public_key_file.is_some()),
            ("--jwt-jwks-file", self.jwt_jwks_file.is_some()),
            ("--jwt-issuer", self.jwt_issuer.is_some()),
            ("--jwt-audience", self.jwt_audience.is_some()),
            ("--allow-sub", !self.allow_sub.is_empty()),
            ("--allow-pub", !self.allow_pub.is_empty()),
            ("--auth-hook", self.auth_hook.is_some()),
            ("--auth-hook-timeout", self.auth_hook_timeout.is_some()),
            (
                "--auth-hook-concurrency",
                self.auth_hook_concurrency.is_some(),
            ),
            ("--jwt-leeway", self.jwt_leeway.is_some()),
        ];
        for (name, on) in flags {
            if on {
                set.push(name);
            }
        }
        set
    }

    /// The authentication flags: one source of keys, what needs what, and
    /// a build that has the feature. Key files and patterns are loaded and
    /// checked at start (`core::auth`), with the same exit code.
    fn validate_auth(&self) -> Result<(), String> {
        let set = self.auth_flags_set();
        if !cfg!(feature = "auth") {
            if let Some(first) = set.first() {
                return Err(format!(
                    "{first}: this wsgate was built without the `auth` feature (rebuild with default features to use authentication)"
                ));
            }
            return Ok(());
        }
        let keys = [
            self.jwt_secret_file.is_some(),
            self.jwt_public_key_file.is_some(),
            self.jwt_jwks_file.is_some(),
        ];
        if keys.iter().filter(|&&k| k).count() > 1 {
            return Err(
                "use one of --jwt-secret-file, --jwt-public-key-file and --jwt-jwks-file".into(),
            );
        }
        let has_key = keys.iter().any(|&k| k);
        if !has_key && (self.jwt_issuer.is_some() || self.jwt_audience.is_some()) {
            return Err("--jwt-issuer and --jwt-audience need a token key (--jwt-secret-file, --jwt-public-key-file or --jwt-jwks-file)".into());
        }
        if !self.auth_on() && (!self.allow_sub.is_empty() || !self.allow_pub.is_empty()) {
            return Err("--allow-sub and --allow-pub need authentication (a --jwt-* key file or --auth-hook); without it every topic is open".into());
        }
        if self.auth_hook.is_none()
            && (self.auth_hook_timeout.is_some() || self.auth_hook_concurrency.is_some())
        {
            return Err("--auth-hook-timeout and --auth-hook-concurrency need --auth-hook".into());
        }
        if !has_key && self.jwt_leeway.is_some() && self.auth_hook.is_none() {
            return Err(
                "--jwt-leeway needs authentication (a --jwt-* key file or --auth-hook)".into(),
            );
        }
        if self.jwt_leeway() > Duration::from_secs(3600) {
            return Err("--jwt-leeway must be at most 1h".into());
        }
        let timeout = self.auth_hook_timeout();
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err("--auth-hook-timeout must be between 1ms and 60s".into());
        }
        if !(1..=10_000).contains(&self.auth_hook_concurrency()) {
            return Err("--auth-hook-concurrency must be between 1 and 10000".into());
        }
        Ok(())
    }

    /// Paths are absolute, plain, and distinct from each other and the cookie route.
    fn validate_paths(&self) -> Result<(), String> {
        let mut paths = vec![
            ("--ws-path", &self.ws_path),
            ("--health-path", &self.health_path),
        ];
        if let Some(echo) = &self.echo_path {
            paths.push(("--echo-path", echo));
        }
        for (flag, path) in &paths {
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == b'?' || b >= 0x7f) {
                return Err(format!(
                    "{flag} must be an absolute path without spaces or query: {path:?}"
                ));
            }
            if path.as_str() == SESSION_PATH {
                return Err(format!(
                    "{flag} {path} collides with the built-in cookie route"
                ));
            }
        }
        for (i, (flag_a, a)) in paths.iter().enumerate() {
            for (flag_b, b) in &paths[i + 1..] {
                if a == b {
                    return Err(format!("{flag_a} and {flag_b} are both {a}"));
                }
            }
        }
        Ok(())
    }

    /// Cookie name, node id, origins.
    fn validate_names(&self) -> Result<(), String> {
        if !is_valid_cookie_name(&self.cookie_name) {
            return Err(format!(
                "--cookie-name {:?} is not a valid cookie name",
                self.cookie_name
            ));
        }
        if let Some(id) = &self.node_id {
            if id.is_empty() || id.len() > 128 || !id.bytes().all(is_name_byte) {
                return Err(format!(
                    "--node-id {id:?} must be 1-128 characters of [A-Za-z0-9._:-]"
                ));
            }
        }
        for origin in &self.allowed_origin {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "--allowed-origin {origin:?} must be `*` or scheme://host[:port]"
                ));
            }
        }
        Ok(())
    }

    /// Timeouts, sizes and counts.
    fn validate_limits(&self) -> Result<(), String> {
        if self.cores == Some(0) {
            return Err("--cores must be at least 1".into());
        }
        if self.handshake_timeout.is_zero() {
            return Err("--handshake-timeout must be greater than 0".into());
        }
        if self.session_ttl.is_zero() {
            return Err("--session-ttl must be greater than 0".into());
        }
        if self.topic_ttl.is_zero() {
            return Err("--topic-ttl must be greater than 0".into());
        }
        if self.history_size == 0 || self.history_size > 1_000_000 {
            return Err("--history-size must be between 1 and 1000000".into());
        }
        if let Some(token) = &self.publish_token {
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("--publish-token must be at least 16 printable characters".into());
            }
        }
        if self.drain_timeout.is_zero() {
            return Err("--drain-timeout must be greater than 0".into());
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return Err("--ping-interval and --pong-timeout must be greater than 0".into());
        }
        if self.ping_interval > MAX_PING_INTERVAL {
            // A connection keeps its heartbeat clocks in 32 bits of ms.
            return Err(format!(
                "--ping-interval must be at most {} days",
                MAX_PING_INTERVAL.as_secs() / 86_400
            ));
        }
        if self.pong_timeout >= self.ping_interval {
            return Err(format!(
                "--pong-timeout {:?} must be shorter than --ping-interval {:?}",
                self.pong_timeout, self.ping_interval
            ));
        }
        if self.max_backpressure < 1024 {
            return Err("--max-backpressure must be at least 1KiB".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_message_size == 0 {
            return Err("--max-message-size must be at least 1 byte".into());
        }
        Ok(())
    }

    /// `--redis` and `--redis-timeout`.
    fn validate_redis(&self) -> Result<(), String> {
        // Checked here rather than by clap, whose message would print the
        // URL, password included.
        let target = match &self.redis {
            Some(url) => Some(RedisTarget::parse(url).map_err(|e| format!("--redis: {e}"))?),
            None => None,
        };
        self.validate_redis_tls(target.as_ref())?;
        self.validate_sentinel()?;
        if self.redis_timeout < Duration::from_millis(10)
            || self.redis_timeout > Duration::from_secs(60)
        {
            return Err("--redis-timeout must be between 10ms and 60s".into());
        }
        Ok(())
    }
}

impl Config {
    /// The sentinels (`--redis-sentinel`, already validated); empty without.
    pub fn redis_sentinels(&self) -> Vec<Endpoint> {
        (self.redis_sentinel.iter())
            .filter_map(|s| Endpoint::parse(s).ok())
            .collect()
    }

    /// `--redis-sentinel` and `--redis-sentinel-master`: both or neither,
    /// with `--redis`.
    fn validate_sentinel(&self) -> Result<(), String> {
        if self.redis_cluster {
            let Some(target) = self.redis_target() else {
                return Err("--redis-cluster needs --redis (a node of the cluster)".into());
            };
            if target.db != 0 {
                return Err("--redis-cluster: a cluster has database 0 only".into());
            }
            if !self.redis_sentinel.is_empty() || self.redis_sentinel_master.is_some() {
                return Err("--redis-cluster and --redis-sentinel exclude each other".into());
            }
        }
        match (self.redis_sentinel.is_empty(), &self.redis_sentinel_master) {
            (true, None) => return Ok(()),
            (false, None) => {
                return Err("--redis-sentinel needs --redis-sentinel-master NAME".into())
            }
            (true, Some(_)) => {
                return Err("--redis-sentinel-master needs --redis-sentinel host:port,…".into())
            }
            (false, Some(name)) if name.is_empty() || name.contains(char::is_whitespace) => {
                return Err(format!(
                    "--redis-sentinel-master: {name:?} is not a master name"
                ))
            }
            _ => {}
        }
        if self.redis.is_none() {
            return Err("--redis-sentinel needs --redis (its credentials, database and scheme are the primary's; its host is replaced by the one Sentinel names), e.g. --redis redis://:password@primary/0".into());
        }
        for s in &self.redis_sentinel {
            Endpoint::parse(s).map_err(|e| format!("--redis-sentinel: {e}"))?;
        }
        Ok(())
    }

    /// The TLS flags: a build that has the feature, and `rediss://`.
    fn validate_redis_tls(&self, target: Option<&RedisTarget>) -> Result<(), String> {
        let flags = [
            ("--redis-ca-file", self.redis_ca_file.is_some()),
            (
                "--redis-tls-server-name",
                self.redis_tls_server_name.is_some(),
            ),
            ("--redis-tls-insecure", self.redis_tls_insecure),
        ];
        let first = flags.iter().find(|(_, on)| *on).map(|(name, _)| *name);
        let tls = target.is_some_and(|t| t.tls);
        if !cfg!(feature = "redis-tls") {
            let what = if tls {
                Some("--redis rediss://")
            } else {
                first
            };
            if let Some(what) = what {
                return Err(format!(
                    "{what}: this wsgate was built without the `redis-tls` feature (rebuild with default features to use TLS to Redis)"
                ));
            }
            return Ok(());
        }
        if let Some(first) = first {
            if !tls {
                return Err(format!("{first} needs --redis rediss://…"));
            }
        }
        if self.redis_tls_insecure && self.redis_ca_file.is_some() {
            return Err(
                "--redis-tls-insecure verifies no certificate: --redis-ca-file would be ignored"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Prints `wsgate: error: <msg>` and exits with code 2.
pub fn fail(msg: &str) -> ! {
    eprintln!("wsgate: error: {msg}");
    std::process::exit(2)
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s)
        .ok_or_else(|| format!("invalid log level {s:?} (use error, warn, info or debug)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::try_parse_from(["wsgate"]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert!(c.cookie_secure);
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.compression_on(), cfg!(feature = "compression"));
        assert_eq!(c.compression_min_size(), 256);
    }

    #[test]
    fn compression_flags() {
        let c = Config::try_parse_from(["wsgate", "--compression", "off"]).unwrap();
        c.validate().unwrap();
        assert!(!c.compression_on());
        let c = Config::try_parse_from(["wsgate", "--compression-min-size", "1KiB"]).unwrap();
        assert_eq!(c.compression_min_size(), 1024);
        // A lean build refuses to be asked for compression, not silently off.
        assert_eq!(c.validate().is_ok(), cfg!(feature = "compression"));
        let c = Config::try_parse_from(["wsgate", "--compression", "on"]).unwrap();
        assert_eq!(c.validate().is_ok(), cfg!(feature = "compression"));
        assert!(Config::try_parse_from(["wsgate", "--compression", "maybe"]).is_err());
    }

    #[test]
    fn sentinels_parse() {
        let c = Config::try_parse_from([
            "wsgate",
            "--redis",
            "redis://:pw@primary/2",
            "--redis-sentinel",
            "10.0.0.1:26379,[::1]:26380",
            "--redis-sentinel-master",
            "mymaster",
        ])
        .unwrap();
        c.validate().unwrap();
        let s = c.redis_sentinels();
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].host.as_str(), s[1].port), ("::1", 26380));
    }

    #[test]
    fn impossible_combinations_are_refused() {
        for args in [
            &["wsgate", "--cores", "0"][..],
            &["wsgate", "--ws-path", "ws"],
            &["wsgate", "--echo-path", "/ws"],
            &["wsgate", "--cookie-name", "a b"],
            &["wsgate", "--node-id", "has space"],
            &["wsgate", "--allowed-origin", "example.com"],
            &["wsgate", "--handshake-timeout", "0s"],
            &["wsgate", "--ping-interval", "5s", "--pong-timeout", "5s"],
            &["wsgate", "--ping-interval", "1000000s"],
            &["wsgate", "--drain-timeout", "0s"],
            &["wsgate", "--allow-sub", "room:*"],
            &["wsgate", "--jwt-issuer", "https://idp"],
            &["wsgate", "--jwt-secret-file", "a", "--jwt-jwks-file", "b"],
            &["wsgate", "--auth-hook-timeout", "1s"],
            &[
                "wsgate",
                "--compression",
                "off",
                "--compression-min-size",
                "1KiB",
            ],
            &[
                "wsgate",
                "--redis",
                "redis://h",
                "--redis-sentinel",
                "s:26379",
            ],
            &[
                "wsgate",
                "--redis",
                "redis://h",
                "--redis-sentinel-master",
                "m",
            ],
            &[
                "wsgate",
                "--redis-sentinel",
                "s:26379",
                "--redis-sentinel-master",
                "m",
            ],
            &[
                "wsgate",
                "--redis",
                "redis://h",
                "--redis-sentinel",
                "s:26379,s2",
                "--redis-sentinel-master",
                "m",
            ],
        ] {
            let c = Config::try_parse_from(args).unwrap();
            assert!(c.validate().is_err(), "{args:?}");
        }
    }
}

/// A feature turned `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Which data path `--io` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IoChoice {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    Uring,
    Epoll,
}
