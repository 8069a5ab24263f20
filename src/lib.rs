//! Petrel, an MQTT broker for MQTT 3.1, 3.1.1 and 5.0.
//!
//! # Architecture
//!
//! A tokio accept loop per listener hands each TCP, TLS or WebSocket
//! connection to one task. That task first runs what its listener asks
//! ([`transport`]: a PROXY protocol header, the TLS handshake, the
//! WebSocket upgrade), then frames the byte stream into packets
//! with [`protocol::decode`] ([`connection`]), runs the CONNECT handshake,
//! and from then on moves bytes between the connection and the session's
//! endpoint ([`session::endpoint`]): the one sans-I/O state machine of a
//! session, with no socket and no generics over streams, for clients and
//! bridges alike. It takes a decoded packet, its inbox's news (deliveries,
//! the store's progress, a takeover) or a deadline, writes what must go
//! out into its outbox, and says what comes next. Each PUBLISH goes to a
//! shared, synchronous router: a topic trie that fans the message out into
//! the bounded inboxes of the subscribed sessions. Each endpoint drains its
//! inbox within its window, encodes with [`protocol::encode`] into its
//! outbox, and the connection writes it once per batch. The payload of a
//! message is one shared `Bytes` from the moment it is decoded until it is
//! copied into each subscriber's outbox; no subscriber gets a copy of the
//! message. Whatever differs per subscriber (the remaining expiry, a topic
//! alias, subscription identifiers) is written beside the shared message
//! when it is encoded. When the broker closes a connection it closes it
//! gracefully (the DISCONNECT that says why is written, the write side shut,
//! input read and discarded for up to a second), so the client reads the
//! reason instead of a reset.
//!
//! Besides the listeners and the connections there is one more task, the
//! housekeeping ticker ([`housekeeping`]): delayed wills, session expiry,
//! expired retained messages and `$SYS`. Nothing else keeps a timer but
//! the [`bridge`]s: one task each, a client of another broker whose
//! session is an endpoint like a client's, seen from the client's side;
//! the bridge itself keeps only its topic rules, its CONNECT and SUBSCRIBE
//! with the remote, and reconnection.
//!
//! The broker's parts are made here and handed down ([`context`]), split
//! by owner: the [`context::Core`] (configuration, router, sessions,
//! counters, tasks, store), which every session and bridge works with, and
//! the [`auth::Authenticator`] (passwords, ACL, enhanced methods, the
//! bounds on logins), which only client connections need. A lower layer
//! is handed the part it uses; imports go one way, and none goes around a
//! loop.
//!
//! Three shapes the code settled on, beside the design it follows:
//! - The endpoint knows a bridge's topic rules only as a trait
//!   ([`session::endpoint::TopicMap`], implemented by the bridge's rules),
//!   as the router knows the store only as [`router::Journal`]: the
//!   session layer never imports the bridge above it.
//! - The outbox (the endpoint's encoded packets, at its peer's protocol
//!   level and Maximum Packet Size) is a type of [`connection`], owned by
//!   the endpoint and written by the connection, so the handshake, the
//!   endpoint and a bridge's CONNECT all write the same way, and tests read
//!   the bytes straight from it.
//! - The retained messages a new subscription matches are a cursor over
//!   the (topic-ordered) retained store, streamed as the client takes them
//!   ([`session::retained`]), not a burst into its bounded inbox. The
//!   cursor stops at the message ids made once the subscription was in the
//!   router (those arrive live), and a persistent session that goes
//!   offline turns what is left into queue entries the store keeps.
//!
//! Where a client connection and a bridge differ in the driver, it is for
//! a reason that holds of brokers only: a client that reads slowly has its
//! input wait while its writes back up, but a bridge keeps reading its
//! remote, because the remote may make the same choice and two brokers
//! waiting for each other to read never move again.
//!
//! One task per connection, as the design has it, holds while the
//! connection does something; an idle one lets go of its task. A plain
//! TCP connection quiet for `hibernate_after_ms`, with nothing waiting to
//! be written, read or stored, leaves the driver's loop, and its socket,
//! endpoint and lease go to one OS thread ([`session::hibernate`]) that
//! waits on all such sockets with one `mio` poller, beside each one's
//! inbox waker and keep-alive deadline. Whichever comes first (bytes, a
//! delivery or interrupt in the inbox, the deadline) puts the connection
//! back on the runtime in a new task running the same driver on the same
//! endpoint, so the endpoint cannot tell. This is the shape the design's
//! "one task per connection" grew into: a task per *active* connection.
//! It moved one thing: the connection's admission guard (its place in
//! `max_connections`) belongs to the [`session::Session`], not to the
//! task that accepted it, so it goes where the session goes and is let go
//! only when the session closes. TLS, WebSocket and PROXY-protocol
//! connections keep their tasks (their streams hold state a bare socket
//! cannot carry). What an
//! idle session keeps is shaped for idleness the same way: what only a
//! busy one uses (its in-flight window, the deliveries it has taken, the
//! QoS 2 ids awaiting PUBREL) is made on first use and let go when the
//! connection hibernates or the session parks, a fact kept in two places
//! is kept in one (the client id lives in the inbox), and a wait that is
//! rare (a CONNECT waiting for a takeover) makes its own `Notify` rather
//! than every session carrying one. A connection that keeps its task pays
//! for the largest state its future ever had, for as long as it lives: the
//! TLS handshake and the WebSocket upgrade, inline, made every such task
//! 12 KiB for a few milliseconds' use, so they run boxed and the stream is
//! split before the session is served. The libraries it leans on are
//! sized the same way (the WebSocket reader gets 2 KiB, not 128 KiB it
//! would zero on every read; the store keeps 32 MiB of its pages, not 1
//! GiB).
//!
//! The admin listener ([`admin`]) is the one way in that is not MQTT: an
//! HTTP server (hyper under axum) on the broker's runtime, its own
//! listener, tasks and bounds, serving Prometheus metrics, health probes,
//! a JSON API and the dashboard. It only reads what the broker keeps
//! anyway: the counters are the atomics they always were (those bumped
//! for every message striped per worker thread, [`metrics::HotCounter`],
//! so that a scrape adds stripes up while workers never share a line),
//! and a latency histogram observes one message id in 64. What only a
//! connected session knows (its subscriptions, its in-flight and queued
//! messages) it is asked through its inbox, beside takeover and shutdown,
//! and answers from its own loop ([`session::manager::Report`]); an
//! administrator's kick is one more interrupt there. So no figure is kept
//! per connection for the API's sake, and a question never waits on the
//! message path: that is the shape this added, and where the design says
//! "admin reads the broker", this is how it reads what lives in a task.
//!
//! The configuration is not fixed for the process's life: a reload
//! ([`reload`]) swaps it whole ([`context::Core::config`], an `ArcSwap`,
//! read without a lock), so what reads it at use time follows. The
//! listeners and bridges are owned by [`reload::Running`], each with a
//! token of its own (a child of the broker's). A removed listener closes
//! the connections it accepted by its number, which a session records
//! when it attaches. The check a reload makes is the one `check-config`
//! and start-up make ([`reload::Checked`]).
//!
//! With `persistence` on, one OS thread runs beside the runtime: the
//! [`store`]'s writer, which owns the embedded database, so blocking disk
//! I/O and `fsync` never run on a runtime worker. Sessions hand it changes
//! without waiting, and the router reports what it changes for durable
//! sessions through the [`router::Journal`] trait, under its own locks, so
//! the store sees changes in the order they happened (the router knows the
//! store only as that trait). The writer applies what queued up since its
//! last commit in one transaction (group commit). An acknowledgement that
//! must wait for the disk (`durability = "sync"`) is held in its session,
//! which keeps reading, until the writer wakes it through its inbox.
//!
//! # A PUBLISH, end to end
//!
//! 1. The connection task reads into a `BytesMut`; [`protocol::decode`]
//!    checks the fixed header against the maximum packet size before
//!    buffering the body, and splits the payload out without copying it.
//! 2. The endpoint resolves a topic alias and checks the packet against the
//!    protocol's rules, the broker's limits and the client's permissions
//!    ([`auth`]: who the client is, from its password, SCRAM or
//!    certificate, and what the ACL lets it do).
//! 3. The router stores a retained message when RETAIN is set, walks the
//!    trie once under a read lock (merging a client's overlapping
//!    subscriptions into one delivery, picking one member of each shared
//!    group), and `try_send`s a shared message into each subscriber's
//!    inbox.
//! 4. The publisher gets its PUBACK or PUBREC once the router has returned
//!    (and, with `durability = "sync"`, once the store has synced what the
//!    message changed: its queue entries for persistent sessions, a
//!    retained message).
//!    Routing never waits; if a subscriber's queue is over half full while
//!    its client keeps up, the publisher's input pauses briefly so the
//!    subscriber can catch up (a client that does not read is never waited
//!    for: messages for it are dropped at its queue bound, and counted).
//!
//! # Embedding
//!
//! Listeners are bound by the caller, so tests bind port 0:
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let broker = petrel::Broker::start(petrel::Config::default(), vec![listener])?;
//! println!("listening on {:?}", broker.local_addrs());
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod auth;
pub mod bridge;
pub mod config;
pub mod connection;
pub mod context;
pub mod housekeeping;
pub mod import;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod server;
pub mod service;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod sys;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Config, ConfigError};

use context::{Context, Core};
use metrics::Metrics;

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    context: Arc<Context>,
    local_addrs: Vec<SocketAddr>,
    /// The bounds on connections, which a reload updates.
    admission: Arc<server::Admission>,
    /// The listeners and bridges that run, which a reload changes.
    running: tokio::sync::Mutex<reload::Running>,
    /// Where the admin listener listens, if it runs.
    admin_addr: Option<SocketAddr>,
    /// Reloads asked for through the admin API, until someone takes them
    /// ([`Broker::reload_requests`]).
    reload_requests: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<admin::ReloadRequest>>>,
    /// Set when they are taken.
    reloads_served: Arc<std::sync::atomic::AtomicBool>,
    /// The admin listener's TLS, reloaded with the listeners'.
    admin_tls: Option<transport::tls::Tls>,
    /// Stops the admin listener, at the end of shutdown.
    admin_stop: tokio_util::sync::CancellationToken,
}

impl Broker {
    /// Starts serving on already bound listeners. Must be called inside a
    /// tokio runtime.
    pub fn start(
        config: Config,
        listeners: Vec<tokio::net::TcpListener>,
    ) -> std::io::Result<Broker> {
        Broker::start_with_auth(config, listeners, Vec::new())
    }

    /// [`Broker::start`], with enhanced authentication methods (MQTT 5
    /// AUTH) clients may name in CONNECT.
    pub fn start_with_auth(
        config: Config,
        listeners: Vec<tokio::net::TcpListener>,
        auth_methods: Vec<Arc<dyn auth::EnhancedAuth>>,
    ) -> std::io::Result<Broker> {
        let listeners = listeners
            .into_iter()
            .map(transport::Listener::tcp)
            .collect();
        Broker::start_listeners(config, listeners, auth_methods)
    }

    /// [`Broker::start_with_auth`] with listeners of any kind (TLS, or a
    /// listener's own `allow_anonymous`), already bound.
    pub fn start_listeners(
        config: Config,
        listeners: Vec<transport::Listener>,
        auth_methods: Vec<Arc<dyn auth::EnhancedAuth>>,
    ) -> std::io::Result<Broker> {
        let authenticator = authenticator(&config, auth_methods)?;
        let metrics = Arc::new(Metrics::default());
        let (store, loaded) = if config.persistence {
            let (store, loaded) =
                store::Store::open(&config, Arc::clone(&metrics)).map_err(|error| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
                })?;
            (Some(Arc::new(store)), Some(loaded))
        } else {
            (None, None)
        };
        let context = Arc::new(Context {
            core: Core::new(config, metrics, store),
            auth: authenticator,
        });
        let core = &context.core;
        if let Some(loaded) = loaded {
            session::restore::restore(core, loaded);
        }
        bridge::sweep(core);
        let admission = Arc::new(server::Admission::new(&context));
        let mut local_addrs = Vec::with_capacity(listeners.len());
        let mut running = reload::Running::default();
        for listener in listeners {
            local_addrs.push(listener.tcp.local_addr()?);
            running.listen(&context, &admission, listener);
        }
        core.tasks.spawn(housekeeping::run(Arc::clone(&context)));
        for bridge in core.config().bridges.clone() {
            running.bridge(&context, bridge);
        }
        let (reloads, reload_requests) = tokio::sync::mpsc::channel(1);
        let reloads_served = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let admin_stop = tokio_util::sync::CancellationToken::new();
        let (admin_addr, admin_tls) = start_admin(
            &context,
            reloads,
            Arc::clone(&reloads_served),
            admin_stop.clone(),
        )?;
        Ok(Broker {
            context,
            local_addrs,
            admission,
            running: tokio::sync::Mutex::new(running),
            admin_addr,
            reload_requests: std::sync::Mutex::new(Some(reload_requests)),
            reloads_served,
            admin_tls,
            admin_stop,
        })
    }

    /// Where the admin listener listens, if `[admin]` has a `bind`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The reloads the admin API asks for (`POST /api/v1/reload`), for
    /// the one who runs the broker to carry out as SIGHUP and answer;
    /// none after the first call. Until it is taken, the API answers 503.
    pub fn reload_requests(&self) -> Option<tokio::sync::mpsc::Receiver<admin::ReloadRequest>> {
        self.reloads_served
            .store(true, std::sync::atomic::Ordering::Release);
        self.reload_requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Reads the TLS certificates and keys, the password file and the ACL
    /// file again (what SIGHUP does). A file that cannot be used leaves the
    /// one in force in place; the errors say which and why. Connections
    /// stay up: new TLS handshakes use the new certificates, and every
    /// check after the reload uses the new passwords and rules.
    pub fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut tls = match self.running.try_lock() {
            Ok(running) => running.tls(),
            Err(_) => Vec::new(),
        };
        tls.extend(self.admin_tls.clone());
        for tls in &tls {
            if let Err(error) = tls.reload() {
                errors.push(error.to_string());
            }
        }
        let config = &self.context.core.config();
        let auth = &self.context.auth;
        if let Some(path) = &config.password_file {
            match auth::password::PasswordFile::load(path) {
                Ok(passwords) => auth.set_passwords(Arc::new(passwords)),
                Err(error) => errors.push(format!("password_file: {error}")),
            }
        }
        if let Some(path) = &config.acl_file {
            match auth::acl::Acl::load(path) {
                Ok(acl) => auth.set_acl(Arc::new(acl)),
                Err(error) => errors.push(format!("acl_file: {error}")),
            }
        }
        errors
    }

    /// Puts a reloaded configuration in force (see [`reload`]): `config`
    /// and what [`reload::Checked::of`] read of its files. Returns a line
    /// for each change made, or refused (a key that needs a restart).
    pub async fn apply(&self, config: Config, checked: reload::Checked) -> Vec<String> {
        let mut report = reload::apply(
            &self.context,
            &self.admission,
            &self.running,
            config,
            checked,
        )
        .await;
        // The admin listener's certificate and key, read again (its other
        // settings need a restart).
        if let Some(tls) = &self.admin_tls {
            if let Err(error) = tls.reload() {
                report.push(error.to_string());
            }
        }
        report
    }

    /// The addresses the broker listens on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The broker's counters (a handle that outlives the broker).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.context.core.metrics
    }

    /// Stops accepting, closes every connection and waits for the tasks to
    /// end, at most `shutdown_timeout`. Returns false if some did not.
    pub async fn shutdown(self) -> bool {
        let core = &self.context.core;
        let timeout = core.config().shutdown_timeout();
        // Cancel first (no new session starts), then interrupt the sessions
        // that run; one that attaches later sees the cancelled token.
        core.tasks.shutdown();
        core.sessions.interrupt_all();
        let finished = core.tasks.shutdown_and_wait(timeout).await;
        session::expiry::publish_delayed_wills(core);
        if let Some(store) = &core.store {
            // What the sessions wrote as they closed is committed and
            // synced before the broker returns.
            store.close();
        }
        self.admin_stop.cancel();
        finished
    }
}

/// Binds and serves the admin listener, when `[admin]` has a `bind`; its
/// TLS files and token read (the token made if its file does not exist).
fn start_admin(
    context: &Arc<Context>,
    reloads: tokio::sync::mpsc::Sender<admin::ReloadRequest>,
    reloads_served: Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<(Option<SocketAddr>, Option<transport::tls::Tls>)> {
    let config = context.core.config_arc();
    let admin = &config.admin;
    if admin.bind.is_none() {
        return Ok((None, None));
    }
    let invalid = |error: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, error);
    let tls = admin
        .tls
        .as_ref()
        .map(|tls| transport::tls::Tls::load_as(tls, "admin.tls".to_owned()))
        .transpose()
        .map_err(|error| invalid(error.to_string()))?;
    let token = admin
        .token_file
        .as_deref()
        .map(config::token_or_new)
        .transpose()
        .map_err(|error| invalid(format!("admin.token_file: {error}")))?;
    let bound = admin::Bound::bind(admin, tls.clone()).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("admin.bind: cannot listen on {:?}: {error}", admin.bind),
        )
    })?;
    let address = bound.local_addr()?;
    let state = Arc::new(admin::AdminState {
        context: Arc::clone(context),
        started: std::time::Instant::now(),
        started_at: std::time::SystemTime::now(),
        auth: admin::auth::Policy::new(admin, token),
        reloads,
        reloads_served,
        stop,
    });
    tokio::spawn(admin::serve(state, bound));
    tracing::info!(%address, tls = admin.tls.is_some(), "admin listener started");
    Ok((Some(address), tls))
}

/// The broker's authentication from its configuration: the password file
/// and the ACL file read, the embedder's methods, and SCRAM-SHA-256
/// against the password file unless the embedder brought its own.
fn authenticator(
    config: &Config,
    mut methods: Vec<Arc<dyn auth::EnhancedAuth>>,
) -> std::io::Result<auth::Authenticator> {
    let invalid = |key: &str, error: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{key}: {error}"))
    };
    let passwords = match &config.password_file {
        Some(path) => Some(Arc::new(
            auth::password::PasswordFile::load(path).map_err(|e| invalid("password_file", &e))?,
        )),
        None => None,
    };
    let passwords: auth::SharedPasswords = Arc::new(std::sync::RwLock::new(passwords));
    if config.password_file.is_some() && !methods.iter().any(|m| m.method() == auth::scram::METHOD)
    {
        methods.push(Arc::new(auth::scram::Scram::new(Arc::clone(&passwords))));
    }
    let acl = match &config.acl_file {
        Some(path) => Some(Arc::new(
            auth::acl::Acl::load(path).map_err(|e| invalid("acl_file", &e))?,
        )),
        None => None,
    };
    let parallel_checks = std::thread::available_parallelism().map_or(2, usize::from);
    Ok(auth::Authenticator::new(
        passwords,
        acl,
        methods,
        parallel_checks,
    ))
}
