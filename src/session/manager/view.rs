//! What the admin API sees of the sessions: who is connected (the
//! [`ClientInfo`] a connection leaves in its slot as it attaches), what a
//! session holds (a [`Report`]: asked of a connected session through its
//! inbox, so that nothing on the message path keeps figures for it; read
//! directly from a parked one), and an administrator's kick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Lease, Parked, SessionManager};
use crate::protocol::ProtocolVersion;
use crate::router::inbox::Interrupt;
use crate::session::state::SessionState;

/// Report requests waiting for their sessions.
pub(super) type Waiting = HashMap<Arc<str>, Vec<oneshot::Sender<Report>>>;

/// Who a connected client is, as its handshake found it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// Its address (the PROXY header's, behind a proxy).
    pub peer: SocketAddr,
    /// The protocol it speaks.
    #[serde(serialize_with = "protocol_name")]
    pub protocol: ProtocolVersion,
    /// The user name it authenticated as.
    pub username: Option<Arc<str>>,
    /// The keep-alive in force, in seconds.
    pub keep_alive: u16,
    /// Whether it asked for a clean start.
    pub clean_start: bool,
    /// When it connected, in seconds since the Unix epoch (eight bytes
    /// rather than a `SystemTime`'s sixteen: it is kept per connection).
    pub connected_at: u64,
}

// 64 bytes: an allocator size class.
const _: () = assert!(std::mem::size_of::<ClientInfo>() <= 64);

/// Now, in seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn protocol_name<S: serde::Serializer>(
    version: &ProtocolVersion,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    })
}

/// One subscription of a session.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubscriptionView {
    /// The filter, as subscribed (with a shared group's prefix).
    pub filter: String,
    /// The maximum QoS granted.
    pub qos: u8,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling (0, 1 or 2).
    pub retain_handling: u8,
    /// The Subscription Identifier.
    pub identifier: Option<u32>,
}

/// What a session holds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Its subscriptions.
    pub subscriptions: Vec<SubscriptionView>,
    /// QoS 1 and 2 messages sent and not yet acknowledged (or held for
    /// the store).
    pub inflight: usize,
    /// Messages waiting to be sent: the session's own queue and its inbox.
    pub queued: usize,
    /// QoS 2 messages received whose PUBREL has not come.
    pub awaiting_pubrel: usize,
    /// The Session Expiry Interval in force, in seconds.
    pub session_expiry: u32,
}

impl Report {
    /// The report of a session with `state`, `inbox` deliveries in its
    /// inbox and `session_expiry`.
    pub fn of(state: &SessionState, inbox: usize, session_expiry: u32) -> Report {
        let subscriptions = state
            .subscriptions
            .iter()
            .map(|(filter, options, identifier)| SubscriptionView {
                filter: filter.as_str().to_owned(),
                qos: options.qos as u8,
                no_local: options.no_local,
                retain_as_published: options.retain_as_published,
                retain_handling: options.retain_handling as u8,
                identifier: identifier.map(|id| id.get()),
            })
            .collect();
        Report {
            subscriptions,
            inflight: state.inflight().len(),
            queued: state.pending().len() + inbox,
            awaiting_pubrel: state.awaiting_pubrel().len(),
            session_expiry,
        }
    }
}

/// A parked session's figures, as a list shows them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Counts {
    /// Subscriptions.
    pub subscriptions: usize,
    /// Messages waiting.
    pub queued: usize,
    /// Messages sent and not acknowledged.
    pub inflight: usize,
}

/// One session, as a list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// Its client id.
    pub client_id: Arc<str>,
    /// Whether a connection holds it.
    pub connected: bool,
    /// Who is connected (none for a parked session or a bridge).
    pub client: Option<ClientInfo>,
    /// A parked session's figures (a connected one's are asked of it
    /// when it alone is inspected).
    pub counts: Option<Counts>,
    /// What the session holds (when it alone is inspected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// Seconds until a parked session expires (none: never, or
    /// connected).
    pub expires_in: Option<u64>,
}

impl Parked {
    /// Its summary; with `report`, what it holds in full.
    fn summary(&self, client_id: &Arc<str>, now: Instant, report: bool) -> SessionSummary {
        let queued = self.state.pending().len() + self.receiver.len();
        SessionSummary {
            client_id: Arc::clone(client_id),
            connected: false,
            client: None,
            counts: Some(Counts {
                subscriptions: self.state.subscriptions.len(),
                queued,
                inflight: self.state.inflight().len(),
            }),
            report: report.then(|| {
                let remaining = self.expires_at.map_or(u32::MAX, |at| {
                    u32::try_from(at.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
                });
                Report::of(&self.state, self.receiver.len(), remaining)
            }),
            expires_in: self
                .expires_at
                .map(|at| at.saturating_duration_since(now).as_secs()),
        }
    }
}

impl SessionManager {
    /// Records who holds `lease`, for the admin API.
    pub fn describe(&self, lease: &Lease, info: ClientInfo) {
        let mut inner = lease.slot.inner();
        if let Some(active) = inner
            .active
            .as_mut()
            .filter(|active| active.generation == lease.generation)
        {
            active.info = Some(Box::new(info));
        }
    }

    /// Every session whose client id `pick` chooses, by client id.
    pub fn summaries(&self, pick: impl Fn(&str) -> bool) -> Vec<SessionSummary> {
        let now = Instant::now();
        let mut sessions: Vec<SessionSummary> = self
            .slots
            .iter()
            .filter(|slot| pick(slot.key()))
            .filter_map(|slot| {
                let inner = slot.inner();
                if let Some(active) = &inner.active {
                    return Some(SessionSummary {
                        client_id: Arc::clone(slot.key()),
                        connected: true,
                        client: active.info.as_deref().cloned(),
                        counts: None,
                        report: None,
                        expires_in: None,
                    });
                }
                inner
                    .parked
                    .as_ref()
                    .map(|parked| parked.summary(slot.key(), now, false))
            })
            .collect();
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        sessions
    }

    /// The session of `client_id`: its summary, with the report of a
    /// connected one asked of it (none if it did not answer within
    /// `wait`). None if there is no such session.
    pub async fn inspect(&self, client_id: &str, wait: Duration) -> Option<SessionSummary> {
        let (mut summary, receiver) = {
            let slot = self.slots.get(client_id).map(|slot| Arc::clone(&slot))?;
            let inner = slot.inner();
            let key: Arc<str> = Arc::from(client_id);
            match (&inner.active, &inner.parked) {
                (Some(active), _) => {
                    let inbox = active.inbox.as_ref()?;
                    let (sender, receiver) = oneshot::channel();
                    self.waiting()
                        .entry(Arc::clone(&key))
                        .or_default()
                        .push(sender);
                    inbox.request_report();
                    let summary = SessionSummary {
                        client_id: key,
                        connected: true,
                        client: active.info.as_deref().cloned(),
                        counts: None,
                        report: None,
                        expires_in: None,
                    };
                    (summary, Some(receiver))
                }
                (None, Some(parked)) => (parked.summary(&key, Instant::now(), true), None),
                (None, None) => return None,
            }
        };
        if let Some(receiver) = receiver {
            summary.report = match tokio::time::timeout(wait, receiver).await {
                Ok(Ok(report)) => Some(report),
                _ => None,
            };
            if summary.report.is_none() {
                // Gone meanwhile, or too busy to answer: this request goes
                // (and any other whose asker stopped waiting).
                let mut waiting = self.waiting();
                if let Some(senders) = waiting.get_mut(client_id) {
                    senders.retain(|sender| !sender.is_closed());
                    if senders.is_empty() {
                        waiting.remove(client_id);
                    }
                }
            }
        }
        Some(summary)
    }

    /// A connected session's answer to [`SessionManager::inspect`].
    pub fn answer_report(&self, client_id: &str, report: Report) {
        let Some(waiting) = self.waiting().remove(client_id) else {
            return;
        };
        for sender in waiting {
            let _ = sender.send(report.clone());
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the connection holding `client_id`'s session, as an
    /// administrator asked (DISCONNECT 0x98 at MQTT 5); with `delete`,
    /// the session ends with it. False if no connection holds it.
    pub fn kick(&self, client_id: &str, delete: bool) -> bool {
        let Some(slot) = self.slots.get(client_id).map(|slot| Arc::clone(&slot)) else {
            return false;
        };
        let inner = slot.inner();
        let Some(inbox) = inner.active.as_ref().and_then(|a| a.inbox.as_ref()) else {
            return false;
        };
        inbox.interrupt(if delete {
            Interrupt::Deleted
        } else {
            Interrupt::Kicked
        });
        true
    }

    /// The parked session of `client_id`, taken out (an administrator
    /// deletes it); none if it is not parked.
    pub fn take_one_parked(&self, client_id: &str) -> Option<(Arc<str>, Parked)> {
        let (key, slot) = self
            .slots
            .get(client_id)
            .map(|entry| (Arc::clone(entry.key()), Arc::clone(entry.value())))?;
        let parked = slot.take_parked()?;
        self.forget_slot(client_id, &slot);
        Some((key, parked))
    }

    /// How many deliveries wait in the inbox of `client_id`'s session.
    pub fn queued(&self, client_id: &str) -> usize {
        let Some(slot) = self.slots.get(client_id).map(|slot| Arc::clone(&slot)) else {
            return 0;
        };
        let inner = slot.inner();
        match (&inner.active, &inner.parked) {
            (Some(active), _) => active.inbox.as_ref().map_or(0, |inbox| inbox.queued()),
            (None, Some(parked)) => parked.state.pending().len() + parked.receiver.len(),
            (None, None) => 0,
        }
    }
}
