//! Broker-wide counters: plain atomics, bumped where things happen and read
//! by `$SYS` and the admin listener's Prometheus endpoint. The message path
//! only ever adds to an atomic: nothing here locks there, and a scrape
//! reads what is there without stopping anyone.
//!
//! Counters that every runtime worker bumps for every message
//! ([`HotCounter`], in [`ByQoS`]) are striped over cache lines, one stripe
//! per worker thread, so that two workers never fight over one line; the
//! reader adds the stripes up. Latencies are kept in fixed-bucket
//! [`Histogram`]s of atomics, observed for a sample of messages only.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

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

    /// Sets the value (for gauges).
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
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
    (
        counters { $( $(#[doc = $doc:literal])* $name:ident => $topic:literal, )* }
        others { $( $(#[doc = $odoc:literal])* $oname:ident: $otype:ty, )* }
    ) => {
        /// Every counter the broker keeps.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: Counter, )*
            $( $(#[doc = $odoc])* pub $oname: $otype, )*
        }

        impl Metrics {
            /// Every counter's `$SYS` topic (Mosquitto's name where it has
            /// one) and value.
            pub fn sys_counters(&self) -> Vec<(&'static str, u64)> {
                let mut counters = vec![ $( ($topic, self.$name.get()), )* ];
                counters.push(("$SYS/broker/messages/received", self.received.messages()));
                counters.push(("$SYS/broker/messages/sent", self.sent.messages()));
                counters
            }
        }
    };
}

metrics! {
    counters {
    /// Sockets open now, whether or not they have sent CONNECT (gauge).
    connections_open => "$SYS/broker/connections/open",
    /// Connections hibernating now: idle, waiting without a task of their
    /// own (gauge; `hibernate_after_ms`).
    connections_hibernating => "$SYS/broker/connections/hibernating",
    /// Times a connection went into hibernation.
    hibernations => "$SYS/broker/connections/hibernations",
    /// Clients connected now (gauge).
    clients_connected => "$SYS/broker/clients/connected",
    /// Persistent sessions held while their client is offline (gauge).
    clients_disconnected => "$SYS/broker/clients/disconnected",
    /// Connections refused: `max_connections` or
    /// `max_connections_per_address` was reached (each also counted below).
    connections_refused => "$SYS/broker/connections/refused",
    /// Connections refused because `max_connections` was reached.
    refused_max_connections => "$SYS/broker/connections/refused/max connections",
    /// Connections refused because `max_connections_per_address` was
    /// reached.
    refused_per_address => "$SYS/broker/connections/refused/per address",
    /// Connections closed for sending no CONNECT within `connect_timeout`.
    connect_timeouts => "$SYS/broker/connections/connect timeouts",
    /// Connections closed for a malformed packet or protocol violation.
    protocol_errors => "$SYS/broker/clients/protocol errors",
    /// Clients disconnected by keep-alive expiry.
    keep_alive_timeouts => "$SYS/broker/clients/keepalive timeouts",
    /// Sessions taken over by a new connection with the same client id.
    takeovers => "$SYS/broker/clients/taken over",
    /// Connections accepted (whether or not they went on to CONNECT).
    connections_accepted => "$SYS/broker/connections/accepted",
    /// Times a publisher's input was paused to let a subscriber that is
    /// short of CPU catch up (flow control; see docs/performance.md).
    publish_pauses => "$SYS/broker/publish/pauses",
    /// Deliveries dropped: a full queue, or QoS 0 for an offline session.
    messages_dropped => "$SYS/broker/publish/messages/dropped",
    /// Of those, QoS 0 deliveries for an offline session (`queue_qos0`
    /// off): the rest found the queue full.
    offline_qos0_dropped => "$SYS/broker/publish/messages/dropped/offline qos0",
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
    /// Configured listeners a reload could not open (gauge): while it is
    /// above zero the broker is not ready.
    listeners_unbound => "$SYS/broker/listeners/unbound",
    /// Admin connections refused at the admin listener's `max_connections`.
    admin_connections_refused => "$SYS/broker/admin/connections/refused",
    }
    others {
    /// PUBLISH packets (and their payload bytes) received from clients,
    /// by QoS.
    received: ByQoS,
    /// PUBLISH packets (and their payload bytes) sent to clients, by the
    /// QoS they were delivered with.
    sent: ByQoS,
    /// CONNECT refusals by the CONNACK reason code sent (at 3.x, the 5.0
    /// code behind the return code).
    connects_refused: ReasonCounts,
    /// Protocol errors by the reason code the connection was closed with
    /// (sent at 5.0; at 3.x the one it would have been).
    protocol_error_kinds: ReasonCounts,
    /// From a message's receipt to its being written for a subscriber,
    /// for a sample of messages (one id in [`LATENCY_SAMPLE`]).
    delivery_latency: Histogram,
    /// How long the store's commits take (the write and, with `sync`, the
    /// fsync).
    store_commit_latency: Histogram,
    /// Every running bridge's figures.
    bridges: Bridges,
    }
}

impl Metrics {
    /// Counts a protocol error closed with reason code `code`.
    pub fn protocol_error(&self, code: u8) {
        self.protocol_errors.increment();
        self.protocol_error_kinds.increment(code);
    }

    /// Counts a connection refused for `max_connections` (`per_address`
    /// false) or `max_connections_per_address`.
    pub fn connection_refused(&self, per_address: bool) {
        self.connections_refused.increment();
        if per_address {
            self.refused_per_address.increment();
        } else {
            self.refused_max_connections.increment();
        }
    }
}

/// Messages with an id that is a multiple of this have their delivery
/// latency observed: no clock is read for the others.
pub const LATENCY_SAMPLE: u64 = 64;

/// How many stripes a [`HotCounter`] has: more than the workers of most
/// machines it runs on; threads beyond share stripes.
const STRIPES: usize = 16;

/// One stripe, alone on its cache line (128 bytes: adjacent-line
/// prefetching pairs 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter bumped from every worker thread on the message path.
#[derive(Debug, Default)]
pub struct HotCounter {
    stripes: [Stripe; STRIPES],
}

/// The stripe of the calling thread, handed out in turn to threads as
/// they first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

impl HotCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Messages and payload bytes by QoS.
#[derive(Debug, Default)]
pub struct ByQoS {
    messages: [HotCounter; 3],
    bytes: [HotCounter; 3],
}

impl ByQoS {
    /// Counts a message of QoS `qos` (0, 1 or 2) with `bytes` of payload.
    pub fn record(&self, qos: u8, bytes: usize) {
        let qos = usize::from(qos.min(2));
        self.messages[qos].add(1);
        self.bytes[qos].add(bytes as u64);
    }

    /// Messages of QoS `qos`.
    pub fn messages_of(&self, qos: u8) -> u64 {
        self.messages[usize::from(qos.min(2))].get()
    }

    /// Payload bytes of QoS `qos`.
    pub fn bytes_of(&self, qos: u8) -> u64 {
        self.bytes[usize::from(qos.min(2))].get()
    }

    /// Messages of every QoS.
    pub fn messages(&self) -> u64 {
        (0..3).map(|qos| self.messages_of(qos)).sum()
    }
}

/// A counter for each reason code.
#[derive(Debug)]
pub struct ReasonCounts([Counter; 256]);

impl Default for ReasonCounts {
    fn default() -> Self {
        ReasonCounts(std::array::from_fn(|_| Counter::default()))
    }
}

impl ReasonCounts {
    /// Counts one for `code`.
    pub fn increment(&self, code: u8) {
        self.0[usize::from(code)].increment();
    }

    /// Every code counted at least once, with its count.
    pub fn nonzero(&self) -> Vec<(u8, u64)> {
        (0..=255u8)
            .map(|code| (code, self.0[usize::from(code)].get()))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

/// The upper bounds of a [`Histogram`]'s buckets, in seconds: from 25 us to
/// 10 s, about three to a decade.
pub const BUCKETS: [f64; 18] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of atomics: a count per bucket (plus one above the
/// last bound), the count and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS.len() + 1],
    sum_nanos: Counter,
}

/// A histogram as read: cumulative counts per upper bound (the last is
/// `+Inf`), the count and the sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations at or below it).
    pub buckets: Vec<(f64, u64)>,
    /// Every observation.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].increment();
        self.sum_nanos
            .add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The histogram as it is now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        for (index, bound) in BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
        {
            total += self.buckets[index].get();
            buckets.push((bound, total));
        }
        HistogramSnapshot {
            buckets,
            count: total,
            sum: self.sum_nanos.get() as f64 / 1e9,
        }
    }
}

/// A bridge's figures and state, kept by its task and read by the admin
/// listener.
#[derive(Debug)]
pub struct BridgeStats {
    /// The bridge's name.
    pub name: String,
    /// Whether its link to the remote is up.
    pub up: AtomicBool,
    /// Links established.
    pub connects: Counter,
    /// Connection attempts that failed, and links lost.
    pub failures: Counter,
    /// Messages sent to the remote.
    pub forwarded: Counter,
    /// Messages taken from the remote.
    pub received: Counter,
    /// The last failure: when and why.
    last_error: Mutex<Option<(SystemTime, String)>>,
    /// The address it is connected to, or last tried.
    address: Mutex<Option<String>>,
    /// Woken by an administrator's request to reconnect now.
    pub reconnect: tokio::sync::Notify,
}

impl BridgeStats {
    /// Figures for the bridge `name`, down.
    pub fn new(name: &str) -> BridgeStats {
        BridgeStats {
            name: name.to_owned(),
            up: AtomicBool::new(false),
            connects: Counter::default(),
            failures: Counter::default(),
            forwarded: Counter::default(),
            received: Counter::default(),
            last_error: Mutex::new(None),
            address: Mutex::new(None),
            reconnect: tokio::sync::Notify::new(),
        }
    }

    /// Records a failure.
    pub fn failed(&self, error: String) {
        self.failures.increment();
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((SystemTime::now(), error));
    }

    /// Records the address in use.
    pub fn set_address(&self, address: &str) {
        *self.address.lock().unwrap_or_else(PoisonError::into_inner) = Some(address.to_owned());
    }

    /// The last failure.
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The address in use, or last tried.
    pub fn address(&self) -> Option<String> {
        self.address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// The running bridges' figures, by name.
#[derive(Debug, Default)]
pub struct Bridges(Mutex<Vec<Arc<BridgeStats>>>);

impl Bridges {
    /// Registers a bridge as it starts (replacing one of the same name).
    pub fn register(&self, stats: Arc<BridgeStats>) {
        let mut bridges = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        bridges.retain(|other| other.name != stats.name);
        bridges.push(stats);
    }

    /// Forgets `stats` as its bridge stops (unless it was replaced).
    pub fn unregister(&self, stats: &Arc<BridgeStats>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|other| !Arc::ptr_eq(other, stats));
    }

    /// Every running bridge, by name.
    pub fn all(&self) -> Vec<Arc<BridgeStats>> {
        let mut bridges = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        bridges.sort_by(|a, b| a.name.cmp(&b.name));
        bridges
    }

    /// The bridge `name`, if it runs.
    pub fn get(&self, name: &str) -> Option<Arc<BridgeStats>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|bridge| bridge.name == name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_cumulatively_up_to_infinity() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(10));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.buckets[0], (0.000_025, 1));
        let at = |bound: f64| {
            snapshot
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, count)| *count)
        };
        assert_eq!(at(0.0025), Some(1));
        assert_eq!(at(0.005), Some(2));
        assert_eq!(at(10.0), Some(2));
        assert_eq!(at(f64::INFINITY), Some(3));
        assert!((snapshot.sum - 60.003_01).abs() < 1e-6, "{}", snapshot.sum);
    }

    #[test]
    fn a_hot_counter_adds_up_its_stripes_across_threads() {
        let counter = Arc::new(HotCounter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.add(2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(counter.get(), 8000);
    }
}
