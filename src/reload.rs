//! A reload (SIGHUP): the configuration file read again, checked as
//! `petrel check-config` checks it ([`Checked::of`]), and put in force
//! without dropping clients. Limits apply from then on: to new
//! connections, and to existing ones where the protocol allows (what was
//! granted in a CONNACK stays for that connection). The password and ACL
//! files are read from their (new) paths. Listeners added are opened;
//! removed ones stop accepting at once and, after `shutdown_timeout`,
//! close their connections; unchanged ones re-read their TLS files.
//! Bridges added start; changed ones reconnect with their new settings;
//! removed ones stop, their queue kept in the store until the next start;
//! unchanged ones are untouched. What only a restart can change (the
//! store, the retained store's bounds) is logged as such, and the value
//! in force stays. A file that fails the check changes nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::auth::acl::Acl;
use crate::auth::password::PasswordFile;
use crate::config::{BridgeConfig, Config, ConfigError, ListenerConfig};
use crate::context::Context;
use crate::server::Admission;
use crate::session::ListenerTag;
use crate::transport::{self, tls::Tls, Listener};

/// A configuration and every file it names, read and checked: what
/// `check-config` reports on, what start-up and a reload put in force.
#[derive(Debug)]
pub struct Checked {
    /// Each listener's TLS, in the order of [`Config::listeners`].
    pub tls: Vec<Option<Tls>>,
    /// The password file, if one is named.
    pub passwords: Option<PasswordFile>,
    /// The ACL, if one is named.
    pub acl: Option<Acl>,
    /// The admin listener's TLS, if it has it.
    pub admin_tls: Option<Tls>,
    /// The admin listener's bearer token, if one is configured.
    pub admin_token: Option<String>,
}

impl Checked {
    /// Reads every file `config` names (certificates and keys, the
    /// bridges' TLS files, the password and ACL files): the first that
    /// cannot be used is the error, naming its key.
    pub fn of(config: &Config) -> Result<Checked, ConfigError> {
        let tls = config
            .listeners()
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                listener
                    .tls
                    .as_ref()
                    .map(|tls| Tls::load(tls, index))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (index, bridge) in config.bridges.iter().enumerate() {
            crate::bridge::link::Connector::new(bridge)
                .map_err(|error| ConfigError::key(&format!("bridge[{index}].tls"), error))?;
        }
        let passwords = match &config.password_file {
            Some(path) => Some(
                PasswordFile::load(path)
                    .map_err(|error| ConfigError::key("password_file", error))?,
            ),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => {
                Some(Acl::load(path).map_err(|error| ConfigError::key("acl_file", error))?)
            }
            None => None,
        };
        let admin_tls = config
            .admin
            .tls
            .as_ref()
            .map(|tls| Tls::load_as(tls, "admin.tls".to_owned()))
            .transpose()?;
        // A token file that does not exist yet is made at start-up.
        let admin_token = match &config.admin.token_file {
            Some(path) if path.exists() => Some(
                crate::config::read_token(path)
                    .map_err(|error| ConfigError::key("admin.token_file", error))?,
            ),
            _ => None,
        };
        Ok(Checked {
            tls,
            passwords,
            acl,
            admin_tls,
            admin_token,
        })
    }
}

/// A listener the broker runs.
#[derive(Debug)]
struct RunningListener {
    /// What configured it; none for one handed over already bound (an
    /// embedder's), which a reload leaves alone.
    config: Option<ListenerConfig>,
    tag: ListenerTag,
    tls: Option<Tls>,
}

/// A bridge the broker runs.
#[derive(Debug)]
struct RunningBridge {
    config: BridgeConfig,
    token: CancellationToken,
    /// Resolves once its task has parked its session and ended.
    done: tokio::sync::oneshot::Receiver<()>,
}

/// The listeners and bridges that run, as a reload finds them.
#[derive(Debug, Default)]
pub struct Running {
    listeners: Vec<RunningListener>,
    bridges: Vec<RunningBridge>,
    /// The next listener's number.
    next_listener: u32,
}

impl Running {
    /// Serves `listener` (configured by `config`, if it was).
    pub fn listen(
        &mut self,
        context: &Arc<Context>,
        admission: &Arc<Admission>,
        listener: Listener,
    ) {
        let config = listener.config.clone();
        let tag = ListenerTag {
            id: self.next_listener,
            closed: context.core.tasks.token().child_token(),
        };
        self.next_listener = self.next_listener.wrapping_add(1);
        let tls = listener.tls.clone();
        let accept = crate::server::accept_loop(
            Arc::clone(context),
            Arc::clone(admission),
            listener,
            tag.clone(),
        );
        context.core.tasks.spawn(accept);
        self.listeners.push(RunningListener { config, tag, tls });
    }

    /// Runs the bridge `config`.
    pub fn bridge(&mut self, context: &Arc<Context>, config: BridgeConfig) {
        let token = context.core.tasks.token().child_token();
        let run = crate::bridge::run(Arc::clone(context), config.clone(), token.clone());
        let (ended, done) = tokio::sync::oneshot::channel::<()>();
        context.core.tasks.spawn(async move {
            run.await;
            drop(ended);
        });
        self.bridges.push(RunningBridge {
            config,
            token,
            done,
        });
    }

    /// The TLS of every listener that has it, for a reload of its files.
    pub fn tls(&self) -> Vec<Tls> {
        self.listeners
            .iter()
            .filter_map(|l| l.tls.clone())
            .collect()
    }
}

/// Keys only a restart can change, as the value in force and the new one.
fn restart_only(old: &Config, new: &mut Config) -> Vec<String> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($key:ident),*) => {$(
            if old.$key != new.$key {
                kept.push(format!(
                    "`{}` needs a restart: {:?} stays in force (not {:?})",
                    stringify!($key), old.$key, new.$key
                ));
                new.$key = old.$key.clone();
            }
        )*};
    }
    keep!(
        persistence,
        data_dir,
        durability,
        flush_interval_ms,
        store_cache_bytes,
        worker_threads,
        max_retained_messages,
        max_retained_bytes,
        shared_subscription_strategy,
        admin
    );
    // Adding or removing the files (not changing their paths) changes
    // which checks a connection makes at all.
    if old.password_file.is_some() != new.password_file.is_some() {
        kept.push(format!(
            "`password_file` added or removed needs a restart: {:?} stays in force",
            old.password_file
        ));
        new.password_file = old.password_file.clone();
    }
    if old.acl_file.is_some() != new.acl_file.is_some() {
        kept.push(format!(
            "`acl_file` added or removed needs a restart: {:?} stays in force",
            old.acl_file
        ));
        new.acl_file = old.acl_file.clone();
    }
    kept
}

/// Puts `new` (checked as `checked`) in force; returns a line for each
/// thing that changed, or could not.
pub async fn apply(
    context: &Arc<Context>,
    admission: &Arc<Admission>,
    running: &Mutex<Running>,
    mut new: Config,
    checked: Checked,
) -> Vec<String> {
    let core = &context.core;
    let old = core.config_arc();
    let mut report = restart_only(&old, &mut new);
    // Files by their paths as now configured (a kept path's file is the
    // one in force: read again, as a SIGHUP always did).
    let Checked {
        tls,
        passwords,
        acl,
        ..
    } = checked;
    if new.password_file.is_some() {
        if let Some(passwords) = passwords {
            context.auth.set_passwords(Arc::new(passwords));
        } else if let Some(path) = &new.password_file {
            match PasswordFile::load(path) {
                Ok(passwords) => context.auth.set_passwords(Arc::new(passwords)),
                Err(error) => report.push(format!("password_file: {error}")),
            }
        }
    }
    if new.acl_file.is_some() {
        if let Some(acl) = acl {
            context.auth.set_acl(Arc::new(acl));
        } else if let Some(path) = &new.acl_file {
            match Acl::load(path) {
                Ok(acl) => context.auth.set_acl(Arc::new(acl)),
                Err(error) => report.push(format!("acl_file: {error}")),
            }
        }
    }
    admission.update(&new);
    let listeners = new.listeners();
    let grace = new.shutdown_timeout();
    core.set_config(new.clone());
    let closed = {
        let mut running = running.lock().await;
        let closed = close_listeners(&mut running, &listeners, &mut report);
        open_listeners(
            context,
            admission,
            &mut running,
            &listeners,
            tls,
            &mut report,
        )
        .await;
        bridges(context, &mut running, &new.bridges, &mut report);
        closed
    };
    if !closed.is_empty() {
        // The removed listeners' connections, after the grace period.
        let waiting = Arc::clone(context);
        let token = context.core.tasks.token().clone();
        context.core.tasks.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(grace) => {
                    waiting.core.sessions.interrupt_listeners(&closed);
                }
            }
        });
    }
    report
}

/// Stops the configured listeners `listeners` has no more (or has with
/// other settings); re-reads the TLS files of those that stay. Returns
/// the numbers of those stopped.
fn close_listeners(
    running: &mut Running,
    listeners: &[ListenerConfig],
    report: &mut Vec<String>,
) -> Vec<u32> {
    let mut closed = Vec::new();
    let before: Vec<ListenerConfig> = running
        .listeners
        .iter()
        .filter_map(|listener| listener.config.clone())
        .collect();
    running.listeners.retain(|listener| {
        let Some(config) = &listener.config else {
            return true;
        };
        // An IPv6 listener whose IPv4 sibling came or went is bound anew.
        let same_family =
            transport::ipv6_only(config, &before) == transport::ipv6_only(config, listeners);
        if listeners.contains(config) && same_family {
            if let Some(tls) = &listener.tls {
                if let Err(error) = tls.reload() {
                    report.push(error.to_string());
                }
            }
            return true;
        }
        listener.tag.closed.cancel();
        if listeners.iter().any(|other| other.bind == config.bind) {
            // Changed, not removed: opened again below with its new
            // settings; what it accepted before stays connected.
            report.push(format!(
                "listener {} changed: it listens again with its new settings; its \
                 connections stay",
                config.bind
            ));
        } else {
            report.push(format!(
                "listener {} closed: its connections close in shutdown_timeout",
                config.bind
            ));
            closed.push(listener.tag.id);
        }
        false
    });
    closed
}

/// Opens the listeners of `listeners` that do not run yet.
async fn open_listeners(
    context: &Arc<Context>,
    admission: &Arc<Admission>,
    running: &mut Running,
    listeners: &[ListenerConfig],
    tls: Vec<Option<Tls>>,
    report: &mut Vec<String>,
) {
    let config = context.core.config_arc();
    let mut unbound = 0;
    for (listener, tls) in listeners.iter().zip(tls) {
        let runs = running
            .listeners
            .iter()
            .any(|r| r.config.as_ref() == Some(listener));
        if runs {
            continue;
        }
        let bound = bind_retrying(listener, listeners).await;
        match bound {
            Ok(tcp) => {
                let open = Listener {
                    tcp,
                    tls,
                    websocket: listener.websocket.as_ref().map(|ws| {
                        transport::websocket::WebSocket {
                            path: ws.path.clone(),
                        }
                    }),
                    proxy_protocol: listener.proxy_protocol,
                    allow_anonymous: Some(config.anonymous_allowed(listener)),
                    config: Some(listener.clone()),
                };
                running.listen(context, admission, open);
                report.push(format!("listener {} opened", listener.bind));
            }
            Err(error) => {
                unbound += u64::from(!listener.optional);
                report.push(format!(
                    "listener {}: cannot listen: {error}",
                    listener.bind
                ));
            }
        }
    }
    // Not ready while a configured listener is not open (`/readyz`).
    context.core.metrics.listeners_unbound.set(unbound);
}

/// Binds `listener`, trying again for a moment when the address is in use:
/// a listener changed in place frees its address as its accept loop ends.
async fn bind_retrying(
    listener: &ListenerConfig,
    all: &[ListenerConfig],
) -> std::io::Result<tokio::net::TcpListener> {
    let mut waited = Duration::ZERO;
    loop {
        match transport::bind(listener, all) {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse
                    && waited < Duration::from_millis(500) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += Duration::from_millis(10);
            }
            other => return other,
        }
    }
}

/// Starts, restarts and stops bridges to match `bridges`.
fn bridges(
    context: &Arc<Context>,
    running: &mut Running,
    bridges: &[BridgeConfig],
    report: &mut Vec<String>,
) {
    let core = &context.core;
    let (kept, stopped): (Vec<_>, Vec<_>) = std::mem::take(&mut running.bridges)
        .into_iter()
        .partition(|bridge| bridges.contains(&bridge.config));
    running.bridges = kept;
    for bridge in stopped {
        bridge.token.cancel();
        let prefix = crate::session::handshake::decide::BRIDGE_ID_PREFIX;
        let client_id = format!("{prefix}{}", bridge.config.name);
        core.sessions.interrupt(&client_id);
        let still = bridges.iter().any(|b| b.name == bridge.config.name);
        if still {
            report.push(format!(
                "bridge {} changed: it reconnects",
                bridge.config.name
            ));
            continue;
        }
        report.push(format!(
            "bridge {} removed: its queue stays in the store until the next start, and nothing \
             more is queued for it",
            bridge.config.name
        ));
        // Once parked, its subscriptions leave the router: nothing more is
        // queued for a bridge that is gone.
        let parked = Arc::clone(context);
        core.tasks.spawn(async move {
            let _ = bridge.done.await;
            let core = &parked.core;
            core.sessions.with_parked(&client_id, |session| {
                for filter in session.state.subscriptions.keys() {
                    core.router
                        .unsubscribe_inbox(filter.as_str(), &session.inbox);
                }
            });
            tracing::info!(bridge = %client_id, "bridge stopped: nothing more is queued for it");
        });
    }
    for bridge in bridges {
        if running.bridges.iter().any(|r| r.config == *bridge) {
            continue;
        }
        let changed = report
            .iter()
            .any(|line| line == &format!("bridge {} changed: it reconnects", bridge.name));
        running.bridge(context, bridge.clone());
        if !changed {
            report.push(format!("bridge {} added", bridge.name));
        }
    }
}
