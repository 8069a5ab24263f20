//! The session endpoint: the one place MQTT session rules live, with no
//! I/O and no generics over streams. The same machine serves a client
//! connected to this broker (the endpoint is its server) and a bridge's
//! connection to a remote broker (the endpoint is the remote's client: it
//! sends PUBLISH and takes the acknowledgements, and takes the remote's
//! PUBLISH and acknowledges them; only the packets that belong to one
//! side, the topic mapping and a few checks differ, by [`Role`]).
//!
//! It owns the session state, the in-flight windows and packet ids both
//! ways, the packets held for the store ([`held`]), topic aliases, the
//! will and the keep-alive bookkeeping. It takes events: a decoded packet
//! from the peer ([`Endpoint::handle`], in [`inbound`] and [`subscribe`]),
//! deliveries, store progress and interruptions from its inbox
//! ([`Endpoint::poll`], sending in [`outbound`]), a deadline passing
//! ([`Endpoint::on_deadline`]). What must go out is written into its
//! [`Outbox`]; what the caller must do next comes back: nothing, wake at
//! [`Endpoint::next_deadline`], or stop with an [`Exit`].
//!
//! Whatever must wake it (a delivery, a commit of the store it waits for,
//! a takeover) wakes it through its inbox, so a held packet never waits
//! for the peer's next packet.

pub mod held;
pub mod inbound;
pub mod outbound;
pub mod subscribe;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::alias::TopicAliases;
use super::exit::Exit;
use super::state::{Phase, SessionState};
use super::throttle::Throttle;
use crate::auth::acl::{Action, Client};
use crate::auth::{AuthExchange, EnhancedAuth};
use crate::connection::Outbox;
use crate::context::{Context, Core};
use crate::protocol::{LastWill, Packet, PacketId, QoS, TopicName};
use crate::router::inbox::{Inbox, InboxReceiver, Interrupt};
use crate::store::Store;
use held::Held;

/// Longest pause of a publisher's input for one congested subscriber.
const CONGESTION_PAUSE: Duration = Duration::from_millis(20);
/// How often a paused publisher looks again at the congested subscriber.
const CONGESTION_CHECK: Duration = Duration::from_millis(2);

/// How a bridge's topics map between this broker and the remote one (the
/// bridge's topic rules implement it): the endpoint knows the rules only
/// as this.
pub trait TopicMap: Send + Sync + fmt::Debug {
    /// The remote topic of a local message going out; none if no rule
    /// sends it.
    fn outgoing(&self, local: &str) -> Option<TopicName>;
    /// The local topic of a remote message coming in; none if no rule
    /// takes it.
    fn incoming(&self, remote: &str) -> Option<TopicName>;
}

/// Which side of the connection the endpoint is.
#[derive(Debug)]
pub enum Role {
    /// This broker's side of a client's connection.
    Server(ServerSide),
    /// A bridge: this broker as the client of a remote broker.
    Client(Box<ClientSide>),
}

/// What only the server side of a client's connection has.
#[derive(Debug, Default)]
pub struct ServerSide {
    /// The user name the client authenticated as (from CONNECT, its
    /// certificate or its authentication method), for the ACL.
    pub username: Option<Arc<str>>,
    /// What few clients have (boxed: every idle connection pays for what
    /// is inline here).
    pub extras: Option<Box<ServerExtras>>,
}

/// The rarer parts of a client's side.
#[derive(Debug, Default)]
pub struct ServerExtras {
    /// The enhanced authentication the client connected with, for
    /// re-authentication.
    pub auth: Option<AuthState>,
    /// The publish rate limit, when one is configured.
    pub throttle: Option<Throttle>,
}

impl ServerSide {
    /// A client's side: its user name, its enhanced authentication, its
    /// rate limit.
    pub fn new(
        username: Option<Arc<str>>,
        auth: Option<AuthState>,
        throttle: Option<Throttle>,
    ) -> ServerSide {
        let extras = (auth.is_some() || throttle.is_some())
            .then(|| Box::new(ServerExtras { auth, throttle }));
        ServerSide { username, extras }
    }

    fn throttle(&self) -> Option<&Throttle> {
        self.extras.as_ref()?.throttle.as_ref()
    }

    fn throttle_mut(&mut self) -> Option<&mut Throttle> {
        self.extras.as_mut()?.throttle.as_mut()
    }
}

/// A pause of the peer's input while a subscriber its last PUBLISH found
/// congested catches up (rare and short: boxed).
#[derive(Debug)]
struct Congestion {
    /// The subscriber's inbox.
    inbox: Arc<Inbox>,
    /// When the pause began (at the next poll).
    since: Option<Instant>,
}

/// What only a bridge's side of its connection to the remote has.
#[derive(Debug)]
pub struct ClientSide {
    /// The bridge's topic rules.
    pub topics: Arc<dyn TopicMap>,
    /// The bridge's figures.
    pub stats: Arc<crate::metrics::BridgeStats>,
    /// When the bridge last sent PINGREQ.
    last_ping: Instant,
}

impl ClientSide {
    /// A bridge's side with its topic rules, counting into `stats`.
    pub fn new(topics: Arc<dyn TopicMap>, stats: Arc<crate::metrics::BridgeStats>) -> ClientSide {
        ClientSide {
            topics,
            stats,
            last_ping: Instant::now(),
        }
    }
}

/// A client's enhanced authentication (section 4.12).
#[derive(Debug)]
pub struct AuthState {
    /// The method it authenticated with.
    pub method: Arc<dyn EnhancedAuth>,
    /// Its user name, if it gave one.
    pub username: Option<String>,
    /// A re-authentication under way.
    pub exchange: Option<Box<dyn AuthExchange>>,
}

/// What the peer announced about itself (its CONNECT, or a remote
/// broker's CONNACK); 3.x peers announce nothing, and get the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Most unacknowledged QoS 1/2 PUBLISH to send it: its Receive Maximum,
    /// capped by `max_inflight`.
    pub send_window: u16,
    /// Most topic aliases this side may give it (0: none).
    pub topic_alias_maximum: u16,
    /// Whether it wants Reason Strings and User Properties on packets
    /// other than PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29] (v5.0).
    pub problem_information: bool,
    /// A bridge marked as one (Mosquitto's `0x84` protocol level): what it
    /// publishes is never sent back to it (its subscriptions are No Local).
    pub bridge: bool,
}

impl ClientLimits {
    /// A peer that announced nothing, with the window `send_window`.
    pub fn plain(send_window: u16) -> ClientLimits {
        ClientLimits {
            send_window,
            topic_alias_maximum: 0,
            problem_information: false,
            bridge: false,
        }
    }
}

/// One session's protocol state machine.
#[derive(Debug)]
pub struct Endpoint {
    /// What is to be sent to the peer.
    pub outbox: Outbox,
    /// Subscriptions, the in-flight windows, QoS 2 ids awaiting PUBREL,
    /// what waits to be sent.
    pub state: SessionState,
    /// The session's inbox (as the router sees it).
    pub inbox: Arc<Inbox>,
    /// The inbox's receiving end.
    pub receiver: InboxReceiver,
    /// Seconds the session outlives the connection: 0 ends it with the
    /// connection (3.1.1 clean session), `u32::MAX` never.
    pub session_expiry: u32,
    /// Keep alive in seconds, as granted (a bridge: as it asked); 0 turns
    /// it off.
    pub keep_alive: u16,
    /// The will, published if the connection ends without DISCONNECT.
    pub will: Option<Box<LastWill>>,
    /// What the peer announced.
    pub limits: ClientLimits,
    /// Which side the endpoint is.
    pub role: Role,
    /// A subscriber the peer's last PUBLISH found congested: reading from
    /// the peer pauses until it drains (bounded).
    congestion: Option<Box<Congestion>>,
    /// MQTT 5 topic aliases both ways, made on first use.
    aliases: Option<Box<TopicAliases>>,
    /// Packets waiting for the store ([`held`]).
    held: Option<Box<Held>>,
    /// When the peer was last heard from, in milliseconds on
    /// [`clock`] (eight bytes rather than an `Instant`'s sixteen).
    last_heard: u64,
    /// When anything was last read or written, on the same clock: a
    /// client's connection idle long enough hibernates.
    last_active: u64,
}

/// Milliseconds since a start a month before the first call: the
/// endpoint's coarse clock for the keep-alive. The month keeps any clock
/// this process reads (a test runtime's paused clock starts when its
/// runtime did) after the start.
fn clock(now: Instant) -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let month = Duration::from_secs(30 * 24 * 60 * 60);
    let start = *START.get_or_init(|| now.checked_sub(month).unwrap_or(now));
    u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

/// The instant `ticks` on [`clock`] stands for.
fn instant(ticks: u64) -> Instant {
    let start = clock(Instant::now());
    let now = Instant::now();
    // The clock's start, seen from now.
    let origin = now - Duration::from_millis(start);
    origin + Duration::from_millis(ticks)
}

impl Endpoint {
    /// An endpoint for the session `state` of its inbox's client id, speaking
    /// through `outbox`; keep-alive, expiry, will and limits are for the
    /// caller to set.
    pub fn new(
        outbox: Outbox,
        state: SessionState,
        (inbox, receiver): (Arc<Inbox>, InboxReceiver),
        role: Role,
    ) -> Endpoint {
        Endpoint {
            outbox,
            state,
            inbox,
            receiver,
            session_expiry: 0,
            keep_alive: 0,
            will: None,
            limits: ClientLimits::plain(u16::MAX),
            role,
            congestion: None,
            aliases: None,
            held: None,
            last_heard: clock(Instant::now()),
            last_active: clock(Instant::now()),
        }
    }

    /// The client id (a bridge's own session: `$bridge/<name>`): the
    /// inbox's, kept once.
    pub fn client_id(&self) -> &Arc<str> {
        self.inbox.client_id()
    }

    /// Whether this is a bridge's side (the client of a remote broker).
    pub fn is_bridge(&self) -> bool {
        matches!(self.role, Role::Client(_))
    }

    /// The store, if this session is one it keeps.
    pub fn store<'a>(&self, core: &'a Core) -> Option<&'a Arc<Store>> {
        core.store.as_ref().filter(|_| self.inbox.is_durable())
    }

    /// This client as the ACL sees it.
    pub fn acl_client(&self) -> Client<'_> {
        let username = match &self.role {
            Role::Server(server) => server.username.as_deref(),
            Role::Client(_) => None,
        };
        Client {
            username,
            client_id: self.client_id(),
        }
    }

    /// Whether the ACL lets this session do `action` on `topic` (a
    /// bridge is the broker itself: always).
    pub fn may(&self, context: &Context, topic: &str, action: Action) -> bool {
        self.is_bridge() || context.auth.may(self.acl_client(), topic, action)
    }

    /// Sends a packet this side built; while packets wait for the store,
    /// it waits behind them (answers keep their order).
    pub fn send(&mut self, packet: Packet) {
        match self.held.as_deref().and_then(Held::last_ticket) {
            Some(ticket) => self.hold(ticket, held::HeldPacket::Packet(Box::new(packet))),
            None => self.outbox.send_or_log(packet),
        }
    }

    /// The peer was heard from (bytes arrived) at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = clock(now);
        self.last_active = self.last_heard;
    }

    /// When the connection last read or wrote anything (or was last
    /// [`Endpoint::touch`]ed).
    pub fn active_at(&self) -> Instant {
        instant(self.last_active)
    }

    /// Counts `now` as activity: idleness is measured from it.
    pub fn touch(&mut self, now: Instant) {
        self.last_active = clock(now);
    }

    /// Bytes were written to the peer at `now`. While its input is not
    /// read (it is slow to read what it is sent), its reading is the sign
    /// of life: its PINGREQs wait unread behind the pause.
    pub fn wrote(&mut self, reading: bool, now: Instant) {
        self.last_active = clock(now);
        if !reading {
            self.last_heard = self.last_active;
        }
    }

    /// Whether the peer's input is read: not while a congested subscriber
    /// catches up, a 3.x client is over its publish rate, or too many
    /// packets wait for the store.
    pub fn takes_input(&self) -> bool {
        self.congestion.is_none() && self.throttled_until().is_none() && !self.is_backed_up()
    }

    /// Whether the next packet already read may be handled: not while a
    /// client is over its publish rate (the rest waits in the buffer).
    pub fn takes_packets(&self) -> bool {
        self.throttled_until().is_none()
    }

    fn throttled_until(&self) -> Option<Instant> {
        match &self.role {
            Role::Server(server) => server.throttle().and_then(|t| t.resume_at),
            Role::Client(_) => None,
        }
    }

    /// Ends a publish-rate pause that is over by `now`: true when input
    /// resumed (packets read before the pause are handled first).
    pub fn resume_input(&mut self, now: Instant) -> bool {
        let Role::Server(server) = &mut self.role else {
            return false;
        };
        let Some(throttle) = server.throttle_mut() else {
            return false;
        };
        if throttle.resume_at.is_some_and(|at| now >= at) {
            throttle.resume_at = None;
            self.last_heard = clock(now);
            return true;
        }
        false
    }

    /// Everything that came through the inbox: a takeover or shutdown
    /// ends the session; held packets the store has caught up with go
    /// out, then deliveries within the window; a congestion pause ends
    /// when the subscriber has caught up or the pause is long enough.
    /// Before the caller waits, the store is asked to wake the endpoint
    /// for what it still holds.
    pub fn poll(&mut self, context: &Context, now: Instant) -> Result<(), Exit> {
        match self.inbox.interruption() {
            Some(Interrupt::TakenOver) => return Err(Exit::TakenOver),
            Some(Interrupt::ShuttingDown) => return Err(Exit::Shutdown),
            Some(Interrupt::Kicked) => return Err(Exit::Kicked { delete: false }),
            Some(Interrupt::Deleted) => return Err(Exit::Kicked { delete: true }),
            None => {}
        }
        if self.inbox.take_report_request() {
            context
                .core
                .sessions
                .answer_report(self.client_id(), self.report());
        }
        self.release_held(context);
        self.pull_deliveries(context);
        if let Some(congestion) = self.congestion.as_mut() {
            // Flow control: input stays paused while the subscriber is
            // congested, for at most CONGESTION_PAUSE at a time.
            let since = *congestion.since.get_or_insert(now);
            if !congestion.inbox.is_congested() || now - since >= CONGESTION_PAUSE {
                self.congestion = None;
                context.core.metrics.publish_pauses.increment();
            }
        }
        self.wake_when_released(&context.core);
        Ok(())
    }

    /// What the session holds, for the admin API.
    pub fn report(&self) -> crate::session::manager::Report {
        crate::session::manager::Report::of(&self.state, self.receiver.len(), self.session_expiry)
    }

    /// When the endpoint must be asked again ([`Endpoint::on_deadline`]):
    /// the keep-alive deadline (not while a 3.x client's rate pause holds
    /// its input), the end of that pause, the next look at a congested
    /// subscriber, a bridge's next PINGREQ.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let throttled_until = self.throttled_until();
        let keep_alive = self
            .keep_alive_limit()
            .filter(|_| throttled_until.is_none())
            .map(|limit| instant(self.last_heard) + limit);
        let ping = match &self.role {
            Role::Client(client) if self.keep_alive > 0 => {
                Some(client.last_ping + Duration::from_secs(u64::from(self.keep_alive)))
            }
            _ => None,
        };
        let congestion = self.congestion.as_ref().map(|_| now + CONGESTION_CHECK);
        [keep_alive, throttled_until, congestion, ping]
            .into_iter()
            .flatten()
            .min()
    }

    /// One and a half times the keep-alive [MQTT-3.1.2-24] (v3.1.1)
    /// [MQTT-3.1.2-22] (v5.0); none for 0.
    fn keep_alive_limit(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    /// A deadline passed: the peer went silent for too long, or a bridge's
    /// PINGREQ is due.
    pub fn on_deadline(&mut self, now: Instant) -> Result<(), Exit> {
        if self.throttled_until().is_none() {
            if let Some(limit) = self.keep_alive_limit() {
                if clock(now) >= self.last_heard.saturating_add(limit.as_millis() as u64) {
                    return Err(Exit::KeepAlive);
                }
            }
        }
        let keep_alive = Duration::from_secs(u64::from(self.keep_alive));
        if let Role::Client(client) = &mut self.role {
            if self.keep_alive > 0 && now >= client.last_ping + keep_alive {
                client.last_ping = now;
                self.outbox.send_or_log(Packet::PingReq);
            }
        }
        Ok(())
    }

    /// A bridge's new connection to its remote: speaking `outbox` now,
    /// within `limits`; what was held for the old connection is dropped
    /// (the new one resends what is unacknowledged), and so are its
    /// aliases. The resend waits for what the held packets waited for: a
    /// QoS 2 PUBLISH whose packet id, or a PUBREL whose release, is not
    /// durable yet could otherwise reach the remote twice after a crash.
    pub fn reconnected(&mut self, outbox: Outbox, limits: ClientLimits, context: &Context) {
        self.outbox = outbox;
        self.limits = limits;
        let waiting = self.held.take().and_then(|held| held.last_ticket());
        self.aliases = None;
        self.congestion = None;
        let now = Instant::now();
        self.last_heard = clock(now);
        if let Role::Client(client) = &mut self.role {
            client.last_ping = now;
        }
        let durable = context
            .core
            .store
            .as_ref()
            .map_or(u64::MAX, |s| s.durable());
        match waiting.filter(|ticket| *ticket > durable) {
            Some(ticket) => self.hold(ticket, held::HeldPacket::Resend),
            None => self.resend_inflight(context),
        }
    }

    /// A bridge's remote kept no session for it (CONNACK Session Present
    /// 0): the session state shared with the old one goes [MQTT-3.2.2-5]
    /// (v5.0). The QoS 2 messages the remote had sent and not released
    /// are forgotten (it may use their packet ids for new messages), and
    /// so are the PUBRELs of messages it had received. Messages it had not
    /// acknowledged stay, to be sent again: nothing acknowledged to a
    /// publisher here is lost. Call it before [`Endpoint::reconnected`].
    pub fn remote_session_lost(&mut self, core: &Core) {
        let store = self.store(core).cloned();
        for packet_id in std::mem::take(self.state.awaiting_pubrel_mut()) {
            if let (Some(store), Some(packet_id)) = (&store, PacketId::new(packet_id)) {
                store.pubrel(self.client_id(), packet_id, false);
            }
        }
        let released: Vec<_> = self
            .state
            .inflight()
            .iter()
            .filter(|entry| entry.phase == Phase::Released)
            .map(|entry| entry.packet_id)
            .collect();
        for packet_id in released {
            self.complete(core, packet_id, QoS::ExactlyOnce, Phase::Released);
        }
    }

    /// Whether the session has nothing to do until something wakes it (the
    /// peer, its inbox, its keep-alive deadline): nothing to send, nothing
    /// waiting for the store, no pause under way. A client's connection
    /// may then hibernate ([`crate::session::hibernate`]); a bridge's
    /// never does.
    pub fn is_quiet(&self) -> bool {
        !self.is_bridge()
            && self.outbox.is_empty()
            && self.congestion.is_none()
            && self.held.is_none()
            && self.throttled_until().is_none()
            && self.state.pending().is_empty()
            && self.state.unsent() == 0
            && self.state.retained.is_none()
            && self.receiver.is_empty()
    }

    /// Whether packets still wait for the store.
    pub fn holds_packets(&self) -> bool {
        self.held.is_some()
    }
}

#[cfg(test)]
mod tests;
