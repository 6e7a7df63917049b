//! What one core owns and every serving task shares: the process-wide
//! [`Shared`] state, and the per-core [`Core`] context (its connections, its
//! epoll set, its hub behind the driver in [`hub_driver`], its link to the
//! shared engine in [`engine_link`], scratch buffers and a coarse clock).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::engine::schema::Schema;
use crate::hub::{Hub, HubConfig};
use crate::metrics::{CoreStats, Metrics};
use crate::net::mailbox::Mailbox;
use crate::net::reactor::{DataPath, Reactor};
use crate::net::registry::Registry;
use crate::proto::cookie::CookieSpec;
use crate::proto::handshake::Routes;

pub mod auth;
pub mod compression;
pub mod engine_link;
#[cfg(feature = "backend")]
pub mod events;
pub mod hub_driver;

use auth::{CoreAuth, Gate};
use compression::CoreCompression;

use engine_link::EngineLink;
use hub_driver::HubDriver;

/// Size of each core's shared receive buffer.
pub const READ_BUF_SIZE: usize = 128 * 1024;

/// State shared by all cores, read-only after start except for counters.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Path routing and origin policy.
    pub routes: Routes,
    /// The `Set-Cookie` line template.
    pub cookie: CookieSpec,
    /// This node's name.
    pub node_id: String,
    /// Per-core counters.
    pub metrics: Metrics,
    /// Number of cores.
    pub cores: usize,
    /// Each core's inbox, by core index.
    pub mailboxes: Vec<Mailbox>,
    /// The shared engine's schema and this process's owner identity (`--redis`).
    pub schema: Option<Arc<Schema>>,
    /// Authentication (`None`: off, every client and topic is open).
    pub auth: Option<Gate>,
    /// The data path of open connections (`--io`, decided at start).
    pub data_path: DataPath,
    /// The events hook, resolved at start (`--events-hook`).
    #[cfg(feature = "backend")]
    pub events: Option<events::EventsSetup>,
    /// TLS to Redis, built at start (`rediss://`).
    pub redis_tls: Option<crate::net::redis_stream::Tls>,
    /// Open WebSocket connections on all cores (checked only at upgrade).
    active: AtomicUsize,
    /// Set once by the signal thread: health and upgrades answer 503.
    draining: AtomicBool,
}

impl Shared {
    /// The process-wide state.
    pub fn new(
        config: Config,
        routes: Routes,
        cookie: CookieSpec,
        node_id: String,
        mailboxes: Vec<Mailbox>,
        auth: Option<Gate>,
        data_path: DataPath,
    ) -> Shared {
        let cores = mailboxes.len();
        let hook_on = config.auth_hook.is_some();
        let config_events_on = config.events_hook.is_some();
        let schema = config.redis.as_ref().map(|_| {
            let ttl = config.session_ttl.as_millis() as u64;
            let topic_ttl = config.topic_ttl.as_millis() as u64;
            let schema = Schema::new(&node_id, config.history_size, ttl)
                .with_topics(topic_ttl, config.presence_max_members);
            Arc::new(if config.redis_cluster {
                schema.for_cluster()
            } else {
                schema
            })
        });
        Shared {
            schema,
            auth,
            data_path,
            config,
            routes,
            cookie,
            node_id,
            metrics: if config_events_on {
                Metrics::new(cores, hook_on).with_events()
            } else {
                Metrics::new(cores, hook_on)
            },
            #[cfg(feature = "backend")]
            events: None,
            redis_tls: None,
            cores,
            mailboxes,
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Flips the process into draining (the signal thread, once).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Open WebSocket connections on all cores.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Takes a connection slot if under `--max-connections`.
    pub fn try_acquire_connection(&self) -> bool {
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.max_connections {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Returns a slot taken by [`Shared::try_acquire_connection`].
    pub fn release_connection(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one core owns. Single-threaded: shared by the core's tasks as `Rc`.
pub struct Core {
    /// Index of this core (0-based).
    pub index: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// This core's counters.
    pub stats: Arc<CoreStats>,
    /// This core's open WebSocket connections.
    pub conns: Registry,
    /// The data path of those connections (io_uring ring or epoll set).
    pub reactor: Reactor,
    hub: HubDriver,
    engine: Option<EngineLink>,
    /// This core's side of authentication (`None`: off).
    pub auth: Option<CoreAuth>,
    /// This core's permessage-deflate compressor and decompressor.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    compression: CoreCompression,
    /// The events hook's queue and client (`--events-hook`).
    #[cfg(feature = "backend")]
    pub events: Option<events::Events>,
    /// Receive buffer lent to whichever connection is reading right now.
    read_buf: RefCell<Box<[u8]>>,
    /// Output batch of the connection being served right now.
    write_buf: RefCell<Vec<u8>>,
    draining: Cell<bool>,
    next_id: Cell<u64>,
    epoch: Instant,
    now_ms: Cell<u64>,
}

impl Core {
    /// Core `index` of the process.
    pub fn new(index: usize, shared: Arc<Shared>, reactor: Reactor) -> Core {
        let stats = shared.metrics.core(index);
        let config = &shared.config;
        let hub = Hub::new(HubConfig {
            core: index,
            cores: shared.cores,
            node_id: shared.node_id.clone(),
            session_ttl_ms: config.session_ttl.as_millis() as u64,
            history_size: config.history_size,
            engine: config.redis.is_some(),
            policy: shared.auth.as_ref().map(|g| g.policy.clone()),
            presence_cap: config.presence_max_members,
            topic_ttl_ms: config.topic_ttl.as_millis() as u64,
            events: config.events_hook.is_some(),
        });
        #[cfg(feature = "backend")]
        let events = shared.events.as_ref().map(events::Events::new);
        let auth = shared.auth.as_ref().map(|g| CoreAuth::new(g, &stats));
        let engine = shared.schema.clone().map(EngineLink::new);
        if engine.is_some() {
            stats.set_redis_up(false);
        }
        Core {
            index,
            stats,
            conns: Registry::default(),
            reactor,
            hub: HubDriver::new(hub),
            engine,
            auth,
            compression: CoreCompression::new(&shared.config),
            #[cfg(feature = "backend")]
            events,
            read_buf: RefCell::new(vec![0u8; READ_BUF_SIZE].into_boxed_slice()),
            write_buf: RefCell::new(Vec::with_capacity(64 * 1024)),
            draining: Cell::new(false),
            next_id: Cell::new(0),
            epoch: Instant::now(),
            now_ms: Cell::new(1),
            shared,
        }
    }

    /// A token unique on this core (connections, requests).
    pub fn next_id(&self) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        id
    }

    /// Coarse time in milliseconds (never 0), advanced by [`Core::tick`].
    pub fn now(&self) -> u64 {
        self.now_ms.get()
    }

    /// Reads the clock into the coarse time and returns it.
    pub fn tick(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.now_ms.set(now);
        now
    }

    /// The coarse second (see [`Core::now`]) at which `unix_secs` (seconds
    /// since the epoch) comes, for deadlines the heartbeat sweep checks;
    /// never 0 (0 means no deadline).
    pub fn coarse_secs_at(&self, unix_secs: u64) -> u32 {
        let now = self.now() / 1000;
        let ahead = unix_secs.saturating_sub(auth::unix_now());
        now.saturating_add(ahead).clamp(1, u32::MAX as u64) as u32
    }

    /// The receive buffer (borrow it for a call, never across an await).
    pub fn read_buf(&self) -> &RefCell<Box<[u8]>> {
        &self.read_buf
    }

    /// The output batch buffer (likewise).
    pub fn write_buf(&self) -> &RefCell<Vec<u8>> {
        &self.write_buf
    }

    /// Gives back the memory of an output batch that a burst grew.
    pub fn shrink_write_buf(&self, wbuf: &mut Vec<u8>) {
        wbuf.clear();
        if wbuf.capacity() > 4 * READ_BUF_SIZE {
            *wbuf = Vec::with_capacity(64 * 1024);
        }
    }

    /// This core's link to the shared engine (`--redis`).
    pub fn engine(&self) -> Option<&EngineLink> {
        self.engine.as_ref()
    }

    /// Whether this core has started draining.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// This core starts draining: the drain owns every connection now.
    pub fn start_draining(&self) {
        self.draining.set(true);
    }
}
