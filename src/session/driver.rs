//! The session loop: one `select!` over the keep-alive deadline, the socket
//! and the inbox (which also carries takeover and shutdown), until the
//! connection ends; then [`super::close`] decides what remains.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::Instrument;

use super::outbound::pull_deliveries;
use super::{Session, Shared};
use crate::connection::{IoEvent, WRITE_HIGH_WATER};
use crate::protocol::{DecodeError, ReasonCode};
use crate::router::inbox::Interrupt;

/// Why a session loop ended.
#[derive(Debug)]
pub enum Exit {
    /// The client sent DISCONNECT.
    Disconnect,
    /// The client sent DISCONNECT with a reason other than 0x00 (0x04 asks
    /// for the will, an error code ends the connection abnormally): the
    /// will is published.
    DisconnectWithWill,
    /// The client closed the connection without DISCONNECT.
    Closed,
    /// A read or write failed.
    Io(io::Error),
    /// Nothing arrived within 1.5 times the keep-alive.
    KeepAlive,
    /// A packet could not be decoded.
    Malformed(DecodeError),
    /// A packet broke a protocol rule: the reason code to close with, and
    /// the rule.
    Violation(ReasonCode, &'static str),
    /// Another connection took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

impl Exit {
    /// Whether the will is published: on every end but a normal DISCONNECT
    /// [MQTT-3.1.2-8] [MQTT-3.14.4-3] (v3.1.1) [MQTT-3.1.2-10] (v5.0).
    pub fn publishes_will(&self) -> bool {
        !matches!(self, Exit::Disconnect)
    }

    /// The reason code of the DISCONNECT the broker sends an MQTT 5 client
    /// before closing [MQTT-4.13.1-1] (v5.0); none when the client ended it.
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            Exit::Disconnect | Exit::DisconnectWithWill | Exit::Closed | Exit::Io(_) => None,
            Exit::KeepAlive => Some(ReasonCode::KeepAliveTimeout),
            Exit::Malformed(error) => Some(error.reason_code()),
            Exit::Violation(reason_code, _) => Some(*reason_code),
            Exit::TakenOver => Some(ReasonCode::SessionTakenOver),
            Exit::Shutdown => Some(ReasonCode::ServerShuttingDown),
        }
    }
}

/// Runs the session until the connection ends, then cleans up.
pub async fn run<R, W>(shared: &Shared, mut session: Box<Session<R, W>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exit = session_loop(shared, &mut session).await;
    let span = session.span();
    let peer_closed = matches!(exit, Exit::Closed | Exit::Io(_));
    // Boxed: only needed at the very end, so it does not size the task.
    // The session is handed back (a takeover need not wait) before the
    // connection lingers in its graceful close.
    let close = async move {
        let mut connection = super::close::finish(shared, session, exit).await;
        connection.close(peer_closed).await;
    };
    Box::pin(close.instrument(span)).await;
}

async fn session_loop<R, W>(shared: &Shared, session: &mut Session<R, W>) -> Exit
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // [MQTT-3.1.2-24] (v3.1.1) [MQTT-3.1.2-22] (v5.0): one and a half
    // times the keep-alive.
    let keep_alive = (session.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(session.keep_alive) * 1500));
    let mut last_heard = Instant::now();
    // One timer serves the keep-alive deadline, the flow-control checks and
    // the end of a rate-limit pause. It is moved lazily: only ever earlier
    // here; when it fires early it is re-armed for what is due next.
    let mut timer_at = last_heard + IDLE;
    let timer = tokio::time::sleep_until(timer_at);
    tokio::pin!(timer);
    let mut paused_since: Option<Instant> = None;
    if let Err(exit) = process_input(shared, session) {
        return exit;
    }
    loop {
        // Takeover and shutdown arrive through the inbox, like deliveries.
        match session.inbox.interruption() {
            Some(Interrupt::TakenOver) => return Exit::TakenOver,
            Some(Interrupt::ShuttingDown) => return Exit::Shutdown,
            None => {}
        }
        let now = Instant::now();
        // A 3.x client over its publish rate: its input waits until then.
        let mut throttled_until = session.throttle.as_ref().and_then(|t| t.resume_at);
        if throttled_until.is_some_and(|at| now >= at) {
            if let Some(throttle) = session.throttle.as_mut() {
                throttle.resume_at = None;
            }
            last_heard = now;
            // Packets read before the pause are handled first.
            if let Err(exit) = process_input(shared, session) {
                return exit;
            }
            throttled_until = session.throttle.as_ref().and_then(|t| t.resume_at);
        }
        super::durable::release_held(shared, session);
        pull_deliveries(shared, session);
        if let Some(inbox) = &session.congested {
            // Flow control: input stays paused while the subscriber is
            // congested, for at most CONGESTION_PAUSE at a time.
            let since = *paused_since.get_or_insert(now);
            if !inbox.is_congested() || now - since >= CONGESTION_PAUSE {
                session.congested = None;
                paused_since = None;
                shared.metrics.publish_pauses.increment();
            }
        }
        super::durable::wake_when_released(shared, session.held.as_deref(), &session.inbox);
        let paused = session.congested.is_some();
        let wake = [
            keep_alive
                .filter(|_| throttled_until.is_none())
                .map(|keep_alive| last_heard + keep_alive),
            throttled_until,
            paused.then(|| now + CONGESTION_CHECK),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(wake) = wake.filter(|wake| *wake < timer_at) {
            timer_at = wake;
            timer.as_mut().reset(timer_at);
        }
        let backed_up = session.connection.unsent() >= WRITE_HIGH_WATER;
        session.inbox.set_peer_blocked(backed_up);
        let can_read = !backed_up
            && !paused
            && throttled_until.is_none()
            && !super::durable::is_backed_up(session);
        tokio::select! {
            biased;
            _ = &mut timer, if wake.is_some() => {
                let now = Instant::now();
                if let Some(keep_alive) = keep_alive.filter(|_| throttled_until.is_none()) {
                    if now >= last_heard + keep_alive {
                        return Exit::KeepAlive;
                    }
                }
                // Re-armed at the top of the loop for what is due next.
                timer_at = now + IDLE;
                timer.as_mut().reset(timer_at);
            }
            event = session.connection.ready(can_read) => match event {
                Err(error) => return Exit::Io(error),
                Ok(IoEvent::Read(0)) => return Exit::Closed,
                Ok(IoEvent::Read(_)) => {
                    last_heard = Instant::now();
                    if let Err(exit) = process_input(shared, session) {
                        return exit;
                    }
                }
                Ok(IoEvent::Wrote(_)) => {
                    // While input is paused (the client is slow to read
                    // what it is sent), its reading is the sign of life:
                    // its PINGREQs wait unread behind the pause.
                    if !can_read {
                        last_heard = Instant::now();
                    }
                }
            },
            // Deliveries (pulled at the top of the loop), takeover,
            // shutdown, and the store's progress.
            _ = session.receiver.changed() => {}
        }
    }
}

/// Where the timer rests when nothing is due.
const IDLE: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest pause of a publisher's input for one congested subscriber.
const CONGESTION_PAUSE: Duration = Duration::from_millis(20);
/// How often a paused publisher looks again at the congested subscriber.
const CONGESTION_CHECK: Duration = Duration::from_millis(2);

/// Handles every whole packet in the read buffer.
fn process_input<R, W>(shared: &Shared, session: &mut Session<R, W>) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        // A client over its publish rate: the rest waits in the buffer.
        if session
            .throttle
            .as_ref()
            .is_some_and(|t| t.resume_at.is_some())
        {
            return Ok(());
        }
        match session.connection.next_packet() {
            Ok(Some(packet)) => super::inbound::handle(shared, session, packet)?,
            Ok(None) => return Ok(()),
            Err(error) => return Err(Exit::Malformed(error)),
        }
    }
}
