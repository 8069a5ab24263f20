//! The broker's parts, made once by [`crate::Broker`] and handed to what
//! uses them, split by who owns them: the [`Core`] (configuration, router,
//! sessions, counters, tasks, store), which every session and bridge
//! works with, and the [`Authenticator`] (passwords, ACL, enhanced
//! methods, the limits on logins), which only client connections and the
//! housekeeping of failed logins need. A task is handed the one
//! [`Context`] that holds both; a function takes the part it uses.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::session::manager::SessionManager;
use crate::shutdown::Tasks;
use crate::store::Store;

/// What every session, bridge and housekeeping step works with.
#[derive(Debug)]
pub struct Core {
    /// The configuration in force: swapped whole by a reload, read with
    /// [`Core::config`].
    config: ArcSwap<Config>,
    /// The router.
    pub router: Arc<Router>,
    /// Sessions by client id.
    pub sessions: SessionManager,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The broker's tasks; its token signals shutdown.
    pub tasks: Tasks,
    /// The durable store, when `persistence` is on.
    pub store: Option<Arc<Store>>,
    /// Idle connections waiting without a task of their own.
    pub hibernation: crate::session::hibernate::Hibernation,
}

impl Core {
    /// The parts of a broker with `config`, keeping durable state in
    /// `store` when there is one (the router reports to it).
    pub fn new(config: Config, metrics: Arc<Metrics>, store: Option<Arc<Store>>) -> Core {
        let mut router = Router::new(
            config.max_retained_messages,
            config.max_retained_bytes,
            config.shared_subscription_strategy,
            Arc::clone(&metrics),
        );
        if let Some(store) = &store {
            router = router.with_journal(Arc::clone(store) as Arc<dyn crate::router::Journal>);
        }
        Core {
            router: Arc::new(router),
            config: ArcSwap::from_pointee(config),
            sessions: SessionManager::new(),
            metrics,
            tasks: Tasks::new(),
            store,
            hibernation: Default::default(),
        }
    }
}

impl Core {
    /// The configuration in force (a cheap read: no lock, no reference
    /// count on the common path). Not to be held across an `.await`; take
    /// [`Core::config_arc`] there.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The configuration in force, to keep.
    pub fn config_arc(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Puts `config` in force: what reads it from now on sees it.
    pub fn set_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }
}

/// Both parts, as a task is handed them.
#[derive(Debug)]
pub struct Context {
    /// The core.
    pub core: Core,
    /// Authentication and authorisation.
    pub auth: Authenticator,
}
