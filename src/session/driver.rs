//! The driver: one `select!` moving bytes between a [`Connection`] and an
//! [`Endpoint`] (the socket, the endpoint's one deadline, its inbox, which
//! also carries takeover, shutdown and the store's progress), until one of
//! them ends it. The same loop serves a client's connection here and a
//! bridge's connection to its remote; for a client, [`super::close`]
//! then decides what remains of the session. A client's plain TCP
//! connection that stays idle for `hibernate_after_ms` leaves the loop to
//! [`super::hibernate`] instead, and a later task comes back into it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::Instrument;

use super::endpoint::Endpoint;
use super::exit::Exit;
use super::hibernate::{self, Halves};
use super::Session;
use crate::connection::{Connection, IoEvent, WRITE_HIGH_WATER};
use crate::context::Context;

/// Where the timer rests when nothing is due.
const IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs a client's session until its connection ends, then closes it; or
/// until it hibernates, handing the session on.
pub async fn run<R, W>(context: &Arc<Context>, mut session: Box<Session<R, W>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    (R, W): Halves,
{
    let exit = loop {
        let connection = &mut session.connection;
        let hibernates = <(R, W)>::HIBERNATES;
        if let Some(exit) =
            drive_until(context, connection, &mut session.endpoint, hibernates).await
        {
            break exit;
        }
        // Boxed: it ends the task, so it need not size it.
        match Box::pin(hibernate::hibernate(context, session)).await {
            Ok(()) => return,
            // It could not (no hibernation thread): it stays awake, and
            // looks again when it has been idle as long again.
            Err(back) => session = back,
        }
    };
    let span = session.span();
    // Boxed: only needed at the very end, so it does not size the task.
    // The session is handed back (a takeover need not wait) before the
    // connection lingers in its graceful close.
    let close = async move {
        // The connection counts as open until it is closed.
        let _guard = session.guard.take();
        let peer_closed = exit.peer_closed();
        let (mut connection, mut outbox) = super::close::finish(context, session, exit).await;
        connection.close(&mut outbox, peer_closed).await;
    };
    Box::pin(close.instrument(span)).await;
}

/// Moves bytes between `connection` and `endpoint` until either ends it.
pub async fn drive<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    endpoint: &mut Endpoint,
) -> Exit
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        // Without a time to hibernate after, it never stops for idleness.
        if let Some(exit) = drive_until(context, connection, endpoint, false).await {
            return exit;
        }
    }
}

/// Moves bytes between `connection` and `endpoint` until either ends it
/// (the exit), or, if it `hibernates`, until nothing has happened for
/// `hibernate_after_ms` and both are quiet (none: the connection may
/// hibernate).
async fn drive_until<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    endpoint: &mut Endpoint,
    hibernates: bool,
) -> Option<Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // One timer serves every deadline of the endpoint. It is moved lazily:
    // only ever earlier here; when it fires early it is re-armed for what
    // is due next.
    let mut timer_at = Instant::now() + IDLE;
    if let Some(after) = hibernate_after(context, hibernates) {
        // Waking is activity: what woke it is read before the first look
        // at idleness. Each look arms the next.
        endpoint.touch(Instant::now());
        timer_at = endpoint.active_at() + after;
    }
    let timer = tokio::time::sleep_until(timer_at);
    tokio::pin!(timer);
    // What came with the handshake (or a bridge's SUBACK) is read already.
    if let Err(exit) = feed(context, connection, endpoint) {
        return Some(exit);
    }
    loop {
        let now = Instant::now();
        if endpoint.resume_input(now) {
            if let Err(exit) = feed(context, connection, endpoint) {
                return Some(exit);
            }
        }
        if let Err(exit) = endpoint.poll(context, now) {
            return Some(exit);
        }
        let wake = endpoint.next_deadline(now);
        if let Some(wake) = wake.filter(|wake| *wake < timer_at) {
            timer_at = wake;
            timer.as_mut().reset(timer_at);
        }
        let backed_up = endpoint.outbox.len() >= WRITE_HIGH_WATER;
        // A client that does not read what it is sent must not slow the
        // publishers: its queue drops at its bound instead. A bridge's
        // remote is a broker that is busy, not a device that stopped
        // reading: publishers pause for it (flow control, bounded in time)
        // as for a subscriber behind for lack of CPU, and nothing is lost.
        endpoint
            .inbox
            .set_peer_blocked(backed_up && !endpoint.is_bridge());
        // A client that reads slowly has its input wait. A bridge keeps
        // reading its remote whatever it has to write: the remote is a
        // broker that may equally stop reading while its writes to us
        // back up, and two such waits would deadlock. What reading adds
        // to the outbox is bounded by the remote's window (acknowledgements).
        let can_read = (!backed_up || endpoint.is_bridge()) && endpoint.takes_input();
        let Endpoint {
            outbox, receiver, ..
        } = &mut *endpoint;
        tokio::select! {
            biased;
            _ = &mut timer, if wake.is_some() || hibernates => {
                let idle = connection.is_idle();
                match on_timer(context, endpoint, hibernates, idle) {
                    Err(exit) => return Some(exit),
                    // Quiet long enough: the connection may hibernate.
                    Ok(None) => return None,
                    Ok(Some(at)) => {
                        timer_at = at;
                        timer.as_mut().reset(timer_at);
                    }
                }
            }
            event = connection.ready(can_read, outbox) => match event {
                Err(error) => return Some(Exit::Io(error)),
                Ok(IoEvent::Read(0)) => return Some(Exit::Closed),
                Ok(IoEvent::Read(_)) => {
                    endpoint.heard(Instant::now());
                    if let Err(exit) = feed(context, connection, endpoint) {
                        return Some(exit);
                    }
                }
                Ok(IoEvent::Wrote(_)) => endpoint.wrote(can_read, Instant::now()),
            },
            // Deliveries (pulled at the top of the loop), takeover,
            // shutdown, and the store's progress.
            _ = receiver.changed() => {}
        }
    }
}

/// The driver's timer fired: what is due first (a keep-alive that expired
/// while the connection hibernated ends it now), then, if it `hibernates`,
/// a look at idleness. Returns when the timer is to fire next (re-armed
/// at the top of the loop for what is due sooner), or none when the
/// connection has been quiet long enough to hibernate.
fn on_timer(
    context: &Context,
    endpoint: &mut Endpoint,
    hibernates: bool,
    connection_idle: bool,
) -> Result<Option<Instant>, Exit> {
    let now = Instant::now();
    endpoint.on_deadline(now)?;
    let Some(after) = hibernate_after(context, hibernates) else {
        return Ok(Some(now + IDLE));
    };
    if now >= endpoint.active_at() + after {
        if endpoint.is_quiet() && connection_idle {
            return Ok(None);
        }
        // Busy after all: look again a whole period later.
        endpoint.touch(now);
    }
    Ok(Some(endpoint.active_at() + after))
}

/// How long a connection stays idle before it hibernates, if it
/// `hibernates` at all; none for never. Read from the configuration each
/// time rather than kept: every byte the driver keeps is paid by every
/// connection.
fn hibernate_after(context: &Context, hibernates: bool) -> Option<Duration> {
    let after = context.core.config().hibernate_after_ms;
    (hibernates && after > 0).then(|| Duration::from_millis(after))
}

/// Hands the endpoint every whole packet in the read buffer, as long as
/// it takes them.
fn feed<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    endpoint: &mut Endpoint,
) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while endpoint.takes_packets() {
        match connection.next_packet() {
            Ok(Some(packet)) => endpoint.handle(context, packet, Instant::now())?,
            Ok(None) => return Ok(()),
            Err(error) => return Err(Exit::Malformed(error)),
        }
    }
    Ok(())
}
