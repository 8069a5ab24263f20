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

/// Every counter the broker keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sockets open now, whether or not they have sent CONNECT (gauge).
    pub connections_open: Counter,
    /// Clients connected now (gauge).
    pub clients_connected: Counter,
    /// Persistent sessions held while their client is offline (gauge).
    pub clients_disconnected: Counter,
    /// Connections refused because `max_connections` was reached.
    pub connections_refused: Counter,
    /// Connections closed for sending no CONNECT within `connect_timeout`.
    pub connect_timeouts: Counter,
    /// Connections closed for a malformed packet or protocol violation.
    pub protocol_errors: Counter,
    /// Clients disconnected by keep-alive expiry.
    pub keep_alive_timeouts: Counter,
    /// Sessions taken over by a new connection with the same client id.
    pub takeovers: Counter,
    /// PUBLISH packets received from clients.
    pub messages_received: Counter,
    /// PUBLISH packets sent to clients.
    pub messages_sent: Counter,
    /// Times a publisher's input was paused to let a subscriber that is
    /// short of CPU catch up (flow control; see docs/performance.md).
    pub publish_pauses: Counter,
    /// Deliveries dropped: a full queue, or QoS 0 for an offline session.
    pub messages_dropped: Counter,
    /// Retained messages not stored because `max_retained_messages` was hit.
    pub retained_dropped: Counter,
    /// Logins refused for a wrong user name or password.
    pub auth_failures: Counter,
    /// Publishes, subscriptions, deliveries and wills the ACL refused.
    pub acl_denied: Counter,
    /// Wills published.
    pub wills_published: Counter,
    /// Wills not published because the client reconnected within the
    /// Will Delay Interval.
    pub wills_cancelled: Counter,
    /// Subscriptions refused because the client holds
    /// `max_subscriptions_per_client` already.
    pub subscriptions_refused: Counter,
    /// Times a client went over `max_publish_rate` or
    /// `max_publish_bytes_rate` (closed at MQTT 5, slowed down at 3.x).
    pub publish_rate_exceeded: Counter,
    /// Sessions removed because their Session Expiry Interval passed.
    pub sessions_expired: Counter,
    /// Messages dropped unsent because their Message Expiry Interval passed.
    pub messages_expired: Counter,
    /// Messages dropped for one client because they exceed the Maximum
    /// Packet Size it announced.
    pub messages_too_large: Counter,
    /// Transactions committed to the durable store.
    pub store_commits: Counter,
    /// Store commits that failed (and were retried).
    pub store_failures: Counter,
    /// Bridge connections established.
    pub bridge_connections: Counter,
    /// Bridge connection attempts that failed, and bridge connections lost.
    pub bridge_failures: Counter,
    /// Bytes read from client sockets.
    pub bytes_received: Counter,
    /// Bytes written to client sockets.
    pub bytes_sent: Counter,
}
