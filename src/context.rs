//! The broker's parts, made once by [`crate::Broker`] and handed to what
//! uses them, split by who owns them: the [`Core`] (configuration, router,
//! sessions, counters, tasks, store), which every session and bridge
//! works with, and the [`Authenticator`] (passwords, ACL, enhanced
//! methods, the limits on logins), which only client connections and the
//! housekeeping of failed logins need. A task is handed the one
//! [`Context`] that holds both; a function takes the part it uses.

use std::sync::Arc;

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
    /// The configuration in force.
    pub config: Arc<Config>,
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
            config: Arc::new(config),
            sessions: SessionManager::new(),
            metrics,
            tasks: Tasks::new(),
            store,
        }
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
