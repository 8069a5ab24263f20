//! `GET /metrics`: every counter in the Prometheus text exposition format
//! (version 0.0.4, which every Prometheus and `promtool check metrics`
//! read), names prefixed `petrel_`, units in the names, `_total` on
//! counters. Written straight from the atomics at scrape time: nothing is
//! registered, nothing on the message path knows a scrape happens.

use std::fmt::Write;

use crate::context::Core;
use crate::metrics::{HistogramSnapshot, Metrics};
use crate::protocol::ReasonCode;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Writes families: `# HELP`, `# TYPE`, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A counter family of one unlabelled sample (`name` ends in `_total`).
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value as f64);
    }

    /// A gauge family of one unlabelled sample.
    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }

    /// A counter family with one label, a sample per value.
    fn labelled_counter(&mut self, name: &str, help: &str, label: &str, samples: &[(String, u64)]) {
        self.family(name, Kind::Counter, help);
        for (value, count) in samples {
            self.sample(name, &[(label, value)], *count as f64);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &HistogramSnapshot) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in &histogram.buckets {
            let le = if bound.is_infinite() {
                "+Inf".to_owned()
            } else {
                number(*bound)
            };
            self.sample(&bucket, &[("le", &le)], *count as f64);
        }
        self.sample(&format!("{name}_sum"), &[], histogram.sum);
        self.sample(&format!("{name}_count"), &[], histogram.count as f64);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A reason code's label: its name in snake case (`not_authorized`).
pub fn reason_label(code: u8) -> String {
    match ReasonCode::from_u8(code) {
        Some(reason) => snake(&format!("{reason:?}").replace("QoS", "Qos")),
        None => format!("0x{code:02x}"),
    }
}

fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (index, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if index > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The whole scrape.
pub fn scrape(core: &Core) -> String {
    let mut out = Exposition::default();
    let metrics = &core.metrics;
    connections(&mut out, metrics);
    sessions(&mut out, core);
    messages(&mut out, core);
    store(&mut out, core);
    bridges(&mut out, core);
    out.finish()
}

fn connections(out: &mut Exposition, m: &Metrics) {
    out.gauge(
        "petrel_connections",
        "Sockets open now, whether or not they have sent CONNECT.",
        m.connections_open.get() as f64,
    );
    out.counter(
        "petrel_connections_accepted_total",
        "Connections accepted.",
        m.connections_accepted.get(),
    );
    out.gauge(
        "petrel_connections_hibernating",
        "Idle connections waiting without a task of their own (hibernate_after_ms).",
        m.connections_hibernating.get() as f64,
    );
    out.counter(
        "petrel_connections_hibernations_total",
        "Times a connection went into hibernation.",
        m.hibernations.get(),
    );
    let mut refused = vec![
        (
            "max_connections".to_owned(),
            m.refused_max_connections.get(),
        ),
        (
            "max_connections_per_address".to_owned(),
            m.refused_per_address.get(),
        ),
        ("connect_timeout".to_owned(), m.connect_timeouts.get()),
    ];
    refused.extend(
        m.connects_refused
            .nonzero()
            .into_iter()
            .map(|(code, count)| (reason_label(code), count)),
    );
    out.labelled_counter(
        "petrel_connections_refused_total",
        "Connections refused or closed before a session: by a bound, for no CONNECT in time, or by the CONNACK reason code sent.",
        "reason",
        &refused,
    );
    out.counter(
        "petrel_auth_failures_total",
        "Logins refused for a wrong user name or password.",
        m.auth_failures.get(),
    );
    let kinds: Vec<(String, u64)> = m
        .protocol_error_kinds
        .nonzero()
        .into_iter()
        .map(|(code, count)| (reason_label(code), count))
        .collect();
    out.labelled_counter(
        "petrel_protocol_errors_total",
        "Connections closed for a malformed packet or a protocol violation, by the reason code.",
        "kind",
        &kinds,
    );
    for (name, help, value) in [
        (
            "petrel_keep_alive_timeouts_total",
            "Clients disconnected for silence beyond 1.5 times their keep-alive.",
            m.keep_alive_timeouts.get(),
        ),
        (
            "petrel_admin_connections_refused_total",
            "Admin connections closed at admin.max_connections.",
            m.admin_connections_refused.get(),
        ),
    ] {
        out.counter(name, help, value);
    }
}

fn sessions(out: &mut Exposition, core: &Core) {
    let m = &core.metrics;
    out.family(
        "petrel_sessions",
        Kind::Gauge,
        "Sessions: online (a client connected) and offline (persistent, client away).",
    );
    out.sample(
        "petrel_sessions",
        &[("state", "online")],
        m.clients_connected.get() as f64,
    );
    out.sample(
        "petrel_sessions",
        &[("state", "offline")],
        m.clients_disconnected.get() as f64,
    );
    for (name, help, value) in [
        (
            "petrel_sessions_expired_total",
            "Sessions removed because their Session Expiry Interval passed.",
            m.sessions_expired.get(),
        ),
        (
            "petrel_sessions_taken_over_total",
            "Sessions taken over by a new connection with the same client id.",
            m.takeovers.get(),
        ),
    ] {
        out.counter(name, help, value);
    }
    out.gauge(
        "petrel_subscriptions",
        "Subscriptions held (filter and client).",
        core.router.subscription_count() as f64,
    );
    out.gauge(
        "petrel_shared_groups",
        "Shared subscription groups held (one per group and filter).",
        core.router.shared_group_count() as f64,
    );
    out.gauge(
        "petrel_retained_messages",
        "Retained messages held.",
        core.router.retained_count() as f64,
    );
    out.gauge(
        "petrel_retained_bytes",
        "Payload bytes of the retained messages held.",
        core.router.retained_bytes() as f64,
    );
}

fn messages(out: &mut Exposition, core: &Core) {
    let m = &core.metrics;
    let qos = ["0", "1", "2"];
    for (direction, figures, what) in [
        ("received", &m.received, "received from clients"),
        (
            "sent",
            &m.sent,
            "sent to clients, by the QoS delivered with",
        ),
    ] {
        let name = format!("petrel_messages_{direction}_total");
        out.family(&name, Kind::Counter, &format!("PUBLISH packets {what}."));
        for (level, label) in qos.iter().enumerate() {
            out.sample(
                &name,
                &[("qos", label)],
                figures.messages_of(level as u8) as f64,
            );
        }
        let name = format!("petrel_payload_{direction}_bytes_total");
        out.family(
            &name,
            Kind::Counter,
            &format!("Payload bytes of the PUBLISH packets {what}."),
        );
        for (level, label) in qos.iter().enumerate() {
            out.sample(
                &name,
                &[("qos", label)],
                figures.bytes_of(level as u8) as f64,
            );
        }
    }
    for (name, help, value) in [
        (
            "petrel_received_bytes_total",
            "Bytes read from client sockets.",
            m.bytes_received.get(),
        ),
        (
            "petrel_sent_bytes_total",
            "Bytes written to client sockets.",
            m.bytes_sent.get(),
        ),
    ] {
        out.counter(name, help, value);
    }
    let offline = m.offline_qos0_dropped.get();
    let drops = [
        (
            "queue_full".to_owned(),
            m.messages_dropped.get().saturating_sub(offline),
        ),
        ("offline_qos0".to_owned(), offline),
        ("too_large".to_owned(), m.messages_too_large.get()),
        ("expired".to_owned(), m.messages_expired.get()),
        ("acl_denied".to_owned(), m.acl_denied.get()),
        ("retained_full".to_owned(), m.retained_dropped.get()),
    ];
    out.labelled_counter(
        "petrel_messages_dropped_total",
        "Messages dropped, by reason: a full session queue, QoS 0 for an offline session, over a client's Maximum Packet Size, expired, refused by the ACL, no room for another retained message.",
        "reason",
        &drops,
    );
    for (name, help, value) in [
        (
            "petrel_publish_pauses_total",
            "Times a publisher's input was paused for a congested subscriber (flow control).",
            m.publish_pauses.get(),
        ),
        (
            "petrel_publish_rate_exceeded_total",
            "Times a client went over max_publish_rate or max_publish_bytes_rate.",
            m.publish_rate_exceeded.get(),
        ),
        (
            "petrel_wills_published_total",
            "Wills published.",
            m.wills_published.get(),
        ),
    ] {
        out.counter(name, help, value);
    }
    out.histogram(
        "petrel_delivery_latency_seconds",
        "From a PUBLISH read to its delivery written for a subscriber, for one message id in 64.",
        &m.delivery_latency.snapshot(),
    );
}

fn store(out: &mut Exposition, core: &Core) {
    let m = &core.metrics;
    for (name, help, value) in [
        (
            "petrel_store_commits_total",
            "Transactions committed to the durable store.",
            m.store_commits.get(),
        ),
        (
            "petrel_store_failures_total",
            "Store commits that failed (and were retried).",
            m.store_failures.get(),
        ),
    ] {
        out.counter(name, help, value);
    }
    out.histogram(
        "petrel_store_commit_duration_seconds",
        "How long a store commit takes (the write and, with durability = sync, the fsync).",
        &m.store_commit_latency.snapshot(),
    );
    let size = core
        .store
        .as_ref()
        .and_then(|store| std::fs::metadata(store.path()).ok())
        .map_or(0, |meta| meta.len());
    out.gauge(
        "petrel_store_file_bytes",
        "Size of the store's file (0 without persistence).",
        size as f64,
    );
}

fn bridges(out: &mut Exposition, core: &Core) {
    let bridges = core.metrics.bridges.all();
    let families: [(&str, Kind, &str); 6] = [
        (
            "petrel_bridge_up",
            Kind::Gauge,
            "1 while the bridge's link to its remote is up.",
        ),
        (
            "petrel_bridge_queued_messages",
            Kind::Gauge,
            "Messages waiting to go out over the bridge.",
        ),
        (
            "petrel_bridge_forwarded_messages_total",
            Kind::Counter,
            "Messages sent to the remote.",
        ),
        (
            "petrel_bridge_received_messages_total",
            Kind::Counter,
            "Messages taken from the remote.",
        ),
        (
            "petrel_bridge_reconnects_total",
            Kind::Counter,
            "Links established after the first.",
        ),
        (
            "petrel_bridge_failures_total",
            Kind::Counter,
            "Failed connection attempts and lost links.",
        ),
    ];
    for (index, (name, kind, help)) in families.iter().enumerate() {
        out.family(name, *kind, help);
        for bridge in &bridges {
            let value = match index {
                0 => u64::from(bridge.is_up()),
                1 => core.sessions.queued(&format!(
                    "{}{}",
                    crate::session::handshake::decide::BRIDGE_ID_PREFIX,
                    bridge.name
                )) as u64,
                2 => bridge.forwarded.get(),
                3 => bridge.received.get(),
                4 => bridge.connects.get().saturating_sub(1),
                _ => bridge.failures.get(),
            };
            out.sample(name, &[("bridge", &bridge.name)], value as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_help_are_escaped_and_numbers_plain() {
        let mut out = Exposition::default();
        out.family("petrel_x", Kind::Gauge, "a \\ b\nc");
        out.sample("petrel_x", &[("bridge", "a\"b\\c\nd")], 1.5);
        out.sample("petrel_x", &[], 3.0);
        assert_eq!(
            out.finish(),
            "# HELP petrel_x a \\\\ b\\nc\n# TYPE petrel_x gauge\n\
             petrel_x{bridge=\"a\\\"b\\\\c\\nd\"} 1.5\npetrel_x 3\n"
        );
        assert_eq!(reason_label(0x87), "not_authorized");
        assert_eq!(reason_label(0x81), "malformed_packet");
        assert_eq!(reason_label(0x9B), "qos_not_supported");
    }
}
