//! Who may connect and what they may do, as the broker holds it while it
//! runs: the password file and the ACL in force (both replaced on reload),
//! the enhanced authentication methods by name, the bound on password
//! checks running at once, and the recent failed logins per address.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use super::acl::{Acl, Action, Client};
use super::enhanced::EnhancedAuth;
use super::password::PasswordFile;

/// A password file shared with the methods that check against it (SCRAM).
pub type SharedPasswords = Arc<RwLock<Option<Arc<PasswordFile>>>>;

/// The broker's authentication and authorisation.
#[derive(Debug)]
pub struct Authenticator {
    /// Enhanced authentication methods, by name.
    pub methods: Vec<Arc<dyn EnhancedAuth>>,
    /// The password file in force, if one is configured.
    pub passwords: SharedPasswords,
    /// Whether an ACL file is configured: without one every check is
    /// answered without a lock.
    acl_configured: bool,
    /// The ACL in force, if one is configured.
    acl: RwLock<Option<Arc<Acl>>>,
    /// Password checks running at once are bounded by this (argon2 takes
    /// memory and CPU by design), so a flood of logins queues instead.
    pub password_checks: tokio::sync::Semaphore,
    /// Recent failed logins by address: how many, and when the last was.
    pub login_failures: dashmap::DashMap<IpAddr, (u32, tokio::time::Instant)>,
    /// Held while `password_rehash` rewrites the file: one at a time.
    pub rehashing: Arc<std::sync::Mutex<()>>,
}

impl Authenticator {
    /// The broker's authentication: `passwords` (shared with the methods
    /// that read them), `acl`, and `methods`; password checks run at most
    /// `parallel_checks` at a time.
    pub fn new(
        passwords: SharedPasswords,
        acl: Option<Arc<Acl>>,
        methods: Vec<Arc<dyn EnhancedAuth>>,
        parallel_checks: usize,
    ) -> Authenticator {
        Authenticator {
            methods,
            passwords,
            acl_configured: acl.is_some(),
            acl: RwLock::new(acl),
            password_checks: tokio::sync::Semaphore::new(parallel_checks),
            login_failures: Default::default(),
            rehashing: Default::default(),
        }
    }

    /// None at all: anonymous clients, no ACL, no methods.
    pub fn open() -> Authenticator {
        Authenticator::new(Default::default(), None, Vec::new(), 1)
    }

    /// The ACL in force.
    pub fn acl(&self) -> Option<Arc<Acl>> {
        if !self.acl_configured {
            return None;
        }
        self.acl
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a reloaded ACL in force.
    pub fn set_acl(&self, acl: Arc<Acl>) {
        *self.acl.write().unwrap_or_else(PoisonError::into_inner) = Some(acl);
    }

    /// The password file in force.
    pub fn passwords(&self) -> Option<Arc<PasswordFile>> {
        self.passwords
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a reloaded password file in force.
    pub fn set_passwords(&self, passwords: Arc<PasswordFile>) {
        *self
            .passwords
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(passwords);
    }

    /// The enhanced authentication method called `name`, if the broker
    /// has it.
    pub fn method(&self, name: &str) -> Option<&Arc<dyn EnhancedAuth>> {
        self.methods.iter().find(|method| method.method() == name)
    }

    /// Whether the ACL, if there is one, lets `client` do `action` on
    /// `topic`. Every delivery asks: without an ACL the answer costs
    /// nothing.
    pub fn may(&self, client: Client<'_>, topic: &str, action: Action) -> bool {
        self.acl()
            .is_none_or(|acl| acl.allows(client, topic, action))
    }

    /// Whether the ACL, if there is one, lets `client` subscribe to
    /// `filter`.
    pub fn may_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        self.acl()
            .is_none_or(|acl| acl.allows_subscription(client, filter))
    }
}
