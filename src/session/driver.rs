//! The driver: one `select!` moving bytes between a [`Connection`] and an
//! [`Endpoint`] (the socket, the endpoint's one deadline, its inbox, which
//! also carries takeover, shutdown and the store's progress), until one of
//! them ends it. The same loop serves a client's connection here and a
//! bridge's connection to its remote; for a client, [`super::close`]
//! then decides what remains of the session.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::Instrument;

use super::endpoint::Endpoint;
use super::exit::Exit;
use super::Session;
use crate::connection::{Connection, IoEvent, WRITE_HIGH_WATER};
use crate::context::Context;

/// Where the timer rests when nothing is due.
const IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs a client's session until its connection ends, then closes it.
pub async fn run<R, W>(context: &Context, mut session: Box<Session<R, W>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exit = drive(context, &mut session.connection, &mut session.endpoint).await;
    let span = session.span();
    // Boxed: only needed at the very end, so it does not size the task.
    // The session is handed back (a takeover need not wait) before the
    // connection lingers in its graceful close.
    let close = async move {
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
    // One timer serves every deadline of the endpoint. It is moved lazily:
    // only ever earlier here; when it fires early it is re-armed for what
    // is due next.
    let mut timer_at = Instant::now() + IDLE;
    let timer = tokio::time::sleep_until(timer_at);
    tokio::pin!(timer);
    // What came with the handshake (or a bridge's SUBACK) is read already.
    if let Err(exit) = feed(context, connection, endpoint) {
        return exit;
    }
    loop {
        let now = Instant::now();
        if endpoint.resume_input(now) {
            if let Err(exit) = feed(context, connection, endpoint) {
                return exit;
            }
        }
        if let Err(exit) = endpoint.poll(context, now) {
            return exit;
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
            _ = &mut timer, if wake.is_some() => {
                if let Err(exit) = endpoint.on_deadline(Instant::now()) {
                    return exit;
                }
                // Re-armed at the top of the loop for what is due next.
                timer_at = Instant::now() + IDLE;
                timer.as_mut().reset(timer_at);
            }
            event = connection.ready(can_read, outbox) => match event {
                Err(error) => return Exit::Io(error),
                Ok(IoEvent::Read(0)) => return Exit::Closed,
                Ok(IoEvent::Read(_)) => {
                    endpoint.heard(Instant::now());
                    if let Err(exit) = feed(context, connection, endpoint) {
                        return exit;
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
