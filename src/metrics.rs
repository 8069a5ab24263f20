//! Broker-wide counters: plain atomics, bumped where things happen and read
//! by `$SYS` (and later a Prometheus endpoint). Nothing here locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts one (for gauges).
    pub fn decrement(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Declares [`Metrics`] and, with each counter, the `$SYS` topic it is
/// published under: a counter cannot be added without one.
macro_rules! metrics {
    ($( $(#[doc = $doc:literal])* $name:ident => $topic:literal, )*) => {
        /// Every counter the broker keeps.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: Counter, )*
        }

        impl Metrics {
            /// Every counter's `$SYS` topic (Mosquitto's name where it has
            /// one) and value.
            pub fn sys_counters(&self) -> Vec<(&'static str, u64)> {
                vec![ $( ($topic, self.$name.get()), )* ]
            }
        }
    };
}

metrics! {
    /// Sockets open now, whether or not they have sent CONNECT (gauge).
    connections_open => "$SYS/broker/connections/open",
    /// Clients connected now (gauge).
    clients_connected => "$SYS/broker/clients/connected",
    /// Persistent sessions held while their client is offline (gauge).
    clients_disconnected => "$SYS/broker/clients/disconnected",
    /// Connections refused because `max_connections` was reached.
    connections_refused => "$SYS/broker/connections/refused",
    /// Connections closed for sending no CONNECT within `connect_timeout`.
    connect_timeouts => "$SYS/broker/connections/connect timeouts",
    /// Connections closed for a malformed packet or protocol violation.
    protocol_errors => "$SYS/broker/clients/protocol errors",
    /// Clients disconnected by keep-alive expiry.
    keep_alive_timeouts => "$SYS/broker/clients/keepalive timeouts",
    /// Sessions taken over by a new connection with the same client id.
    takeovers => "$SYS/broker/clients/taken over",
    /// PUBLISH packets received from clients.
    messages_received => "$SYS/broker/messages/received",
    /// PUBLISH packets sent to clients.
    messages_sent => "$SYS/broker/messages/sent",
    /// Times a publisher's input was paused to let a subscriber that is
    /// short of CPU catch up (flow control; see docs/performance.md).
    publish_pauses => "$SYS/broker/publish/pauses",
    /// Deliveries dropped: a full queue, or QoS 0 for an offline session.
    messages_dropped => "$SYS/broker/publish/messages/dropped",
    /// Retained messages not stored because `max_retained_messages` was hit.
    retained_dropped => "$SYS/broker/retained messages/dropped",
    /// Logins refused for a wrong user name or password.
    auth_failures => "$SYS/broker/clients/auth failures",
    /// Publishes, subscriptions, deliveries and wills the ACL refused.
    acl_denied => "$SYS/broker/clients/acl denied",
    /// Wills published.
    wills_published => "$SYS/broker/wills/published",
    /// Wills not published because the client reconnected within the
    /// Will Delay Interval.
    wills_cancelled => "$SYS/broker/wills/cancelled",
    /// Subscriptions refused because the client holds
    /// `max_subscriptions_per_client` already.
    subscriptions_refused => "$SYS/broker/subscriptions/refused",
    /// Times a client went over `max_publish_rate` or
    /// `max_publish_bytes_rate` (closed at MQTT 5, slowed down at 3.x).
    publish_rate_exceeded => "$SYS/broker/publish/rate exceeded",
    /// Sessions removed because their Session Expiry Interval passed.
    sessions_expired => "$SYS/broker/clients/expired",
    /// Messages dropped unsent because their Message Expiry Interval passed.
    messages_expired => "$SYS/broker/messages/expired",
    /// Messages dropped for one client because they exceed the Maximum
    /// Packet Size it announced.
    messages_too_large => "$SYS/broker/publish/messages/too large",
    /// Transactions committed to the durable store.
    store_commits => "$SYS/broker/store/commits",
    /// Store commits that failed (and were retried).
    store_failures => "$SYS/broker/store/failures",
    /// Bridge connections established.
    bridge_connections => "$SYS/broker/bridges/connections",
    /// Bridge connection attempts that failed, and bridge connections lost.
    bridge_failures => "$SYS/broker/bridges/failures",
    /// Bytes read from client sockets.
    bytes_received => "$SYS/broker/load/bytes/received",
    /// Bytes written to client sockets.
    bytes_sent => "$SYS/broker/load/bytes/sent",
}
