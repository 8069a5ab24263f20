//! Hibernation: an idle plain-TCP connection waits without a task of its
//! own. Most of what a connection costs while it is idle is the machinery
//! of waiting: tokio's task cell around the connection's future (768
//! bytes) and the socket's registration with tokio's reactor (256 bytes),
//! more than a whole Mosquitto connection. After `hibernate_after_ms` with
//! nothing read, written or delivered and nothing to send, the driver
//! hands the connection here: its socket goes back to a plain
//! [`std::net::TcpStream`] registered with the one [`mio::Poll`] of the
//! broker's hibernation thread, its endpoint (the session, untouched) is
//! kept in a slab, and its inbox is given a waker. The task ends.
//!
//! Whatever the task would have woken for wakes the connection: bytes or
//! a close from the client (the socket turns readable), anything through
//! its inbox (a delivery, a takeover, a shutdown, a kick, a report asked
//! for by the admin API, the store), and the endpoint's next deadline (the
//! keep-alive). Waking is the reverse: the socket is registered with
//! tokio again and a new task runs the same driver on the same endpoint,
//! which finds what woke it as it would have had it been awake. A
//! hibernating connection counts as a running task for shutdown.
//!
//! TLS, WebSocket and PROXY-protocol connections never hibernate: their
//! streams keep state (a TLS session, a frame decoder, bytes read past
//! the PROXY header) a plain socket cannot hold.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::Wake;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::endpoint::Endpoint;
use super::exit::Exit;
use super::manager::Lease;
use super::Session;
use crate::connection::Connection;
use crate::context::Context;
use crate::server::OpenConnection;

/// The token of the thread's own waker.
const WAKE: Token = Token(usize::MAX);
/// How many readiness events one poll takes in.
const EVENTS: usize = 256;

/// A stream's two halves, as a connection's task holds them: whether the
/// connection can hibernate, and the plain socket it hibernates as.
pub trait Halves: Sized {
    /// Whether connections on these halves hibernate.
    const HIBERNATES: bool = false;

    /// The halves as one plain socket, if they are one.
    fn into_socket(self) -> io::Result<std::net::TcpStream> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl Halves for (OwnedReadHalf, OwnedWriteHalf) {
    const HIBERNATES: bool = true;

    fn into_socket(self) -> io::Result<std::net::TcpStream> {
        let (reader, writer) = self;
        let stream = reader
            .reunite(writer)
            .map_err(|_| io::Error::other("the halves are of different sockets"))?;
        // Deregisters it from tokio's reactor; it stays non-blocking.
        stream.into_std()
    }
}

impl<S> Halves for (tokio::io::ReadHalf<S>, tokio::io::WriteHalf<S>) {}

/// A hibernating connection: everything its task held but the task (and
/// the broker's context, which the thread holds for all of them). Kept
/// at 256 bytes, an allocator size class (checked as it compiles).
struct Sleeper {
    socket: std::net::TcpStream,
    endpoint: Endpoint,
    lease: Lease,
    guard: Option<OpenConnection>,
    /// Counts it as a running task until it wakes (for shutdown).
    _running: TaskTrackerToken,
    /// The largest packet the client may send, as its CONNACK granted
    /// (a reload since changes it for new connections only).
    max_packet: u32,
}

const _: () = assert!(std::mem::size_of::<Sleeper>() <= 256);

/// One place in the slab: its generation tells a stale wake-up (for a
/// connection that woke already) from one for the connection there now.
struct Slot {
    generation: u32,
    sleeper: Option<Box<Sleeper>>,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Connections woken through their inbox, for the thread to wake.
    woken: Vec<u64>,
    /// Deadlines, earliest first; stale entries are skipped when due.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The broker is gone: the thread ends.
    closed: bool,
}

impl State {
    fn insert(&mut self, sleeper: Box<Sleeper>) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    sleeper: None,
                });
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.sleeper = Some(sleeper);
        (u64::from(slot.generation) << 32) | u64::from(index)
    }

    /// Whether `key` is the connection sleeping in its slot now.
    fn holds(&self, key: u64) -> bool {
        let index = (key & u64::from(u32::MAX)) as usize;
        self.slots
            .get(index)
            .is_some_and(|slot| u64::from(slot.generation) == key >> 32 && slot.sleeper.is_some())
    }

    /// Drops the deadlines of connections that woke already once they
    /// outnumber the sleeping ones (a connection that wakes and sleeps
    /// often leaves one per sleep): the heap stays within twice the
    /// sleepers, in amortised constant time per deadline.
    fn prune(&mut self) {
        let sleeping = self.slots.len() - self.free.len();
        if self.deadlines.len() <= 2 * sleeping + 64 {
            return;
        }
        let mut deadlines = std::mem::take(&mut self.deadlines).into_vec();
        deadlines.retain(|Reverse((_, key))| self.holds(*key));
        self.deadlines = BinaryHeap::from(deadlines);
    }

    /// The key an event's token names: the token is the key where a
    /// pointer-sized token holds it, and the slot's index alone on 32-bit
    /// targets, where the slot's connection now is meant (an event for the
    /// one before it there wakes it early, which is harmless).
    fn key_of(&self, token: Token) -> u64 {
        let raw = token.0 as u64;
        if raw >> 32 != 0 {
            return raw;
        }
        let index = raw & u64::from(u32::MAX);
        self.slots
            .get(index as usize)
            .map_or(raw, |slot| (u64::from(slot.generation) << 32) | index)
    }

    fn take(&mut self, key: u64) -> Option<Box<Sleeper>> {
        let index = (key & u64::from(u32::MAX)) as u32;
        let slot = self.slots.get_mut(index as usize)?;
        if u64::from(slot.generation) != key >> 32 {
            return None;
        }
        let sleeper = slot.sleeper.take()?;
        self.free.push(index);
        Some(sleeper)
    }
}

/// The token a socket is registered with: its key, or where a token is
/// narrower than a key, its slot's index ([`State::key_of`]).
fn token(key: u64) -> Token {
    Token(usize::try_from(key).unwrap_or((key & u64::from(u32::MAX)) as usize))
}

/// What the thread and the wakers share.
struct Shared {
    /// The broker the sleepers belong to (weak: it holds this).
    context: Weak<Context>,
    registry: Registry,
    waker: mio::Waker,
    state: Mutex<State>,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self, key: u64) {
        let mut state = self.lock();
        let first = state.woken.is_empty();
        state.woken.push(key);
        drop(state);
        if first {
            self.notify();
        }
    }

    /// Wakes the thread, to look at what changed.
    fn notify(&self) {
        if let Err(error) = self.waker.wake() {
            tracing::warn!(%error, "could not wake the hibernation thread");
        }
    }
}

/// The waker a hibernating connection's inbox holds.
struct InboxWaker {
    shared: Weak<Shared>,
    key: u64,
}

impl Wake for InboxWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.wake(self.key);
        }
    }
}

/// The broker's hibernating connections: a thread, started on the first
/// hibernation, waiting on all of their sockets and deadlines at once.
#[derive(Default)]
pub struct Hibernation {
    shared: OnceLock<Option<Arc<Shared>>>,
}

impl std::fmt::Debug for Hibernation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hibernation").finish_non_exhaustive()
    }
}

impl Drop for Hibernation {
    fn drop(&mut self) {
        if let Some(Some(shared)) = self.shared.get() {
            shared.lock().closed = true;
            let _ = shared.waker.wake();
        }
    }
}

impl Hibernation {
    /// The thread's shared side, started if it is not yet; none if it
    /// could not be (then nothing hibernates).
    fn shared(&self, context: &Arc<Context>) -> Option<&Arc<Shared>> {
        self.shared
            .get_or_init(|| match start(context) {
                Ok(shared) => Some(shared),
                Err(error) => {
                    tracing::warn!(%error, "could not start the hibernation thread; idle connections keep their tasks");
                    None
                }
            })
            .as_ref()
    }
}

fn start(context: &Arc<Context>) -> io::Result<Arc<Shared>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = mio::Waker::new(poll.registry(), WAKE)?;
    let shared = Arc::new(Shared {
        context: Arc::downgrade(context),
        registry,
        waker,
        state: Mutex::default(),
        runtime,
    });
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("petrel-hibernation".to_owned())
        .spawn(move || watch(poll, thread_shared))?;
    Ok(shared)
}

/// The thread: waits for any hibernating connection's socket, inbox or
/// deadline, and wakes the connection.
fn watch(mut poll: Poll, shared: Arc<Shared>) {
    let mut events = Events::with_capacity(EVENTS);
    let mut due: Vec<u64> = Vec::new();
    loop {
        let timeout = {
            let state = shared.lock();
            if state.closed {
                break;
            }
            state
                .deadlines
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
        };
        if let Err(error) = poll.poll(&mut events, timeout) {
            if error.kind() != io::ErrorKind::Interrupted {
                tracing::error!(%error, "hibernation poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let waking: Vec<Box<Sleeper>> = {
            let mut state = shared.lock();
            let readable = events.iter().map(|event| event.token());
            let readable = readable.filter(|token| *token != WAKE);
            due.extend(readable.map(|token| state.key_of(token)));
            due.append(&mut state.woken);
            let now = Instant::now();
            while let Some(Reverse((at, key))) = state.deadlines.peek().copied() {
                if at > now {
                    break;
                }
                state.deadlines.pop();
                due.push(key);
            }
            due.drain(..).filter_map(|key| state.take(key)).collect()
        };
        for sleeper in waking {
            wake(&shared, sleeper);
        }
    }
    // The broker is gone; what still sleeps closes with its sockets,
    // dropped outside the lock (a sleeper's lease and inbox take locks of
    // their own).
    let slots = std::mem::take(&mut shared.lock().slots);
    drop(slots);
}

/// Hands a woken connection back to the runtime, in a task of its own.
fn wake(shared: &Shared, sleeper: Box<Sleeper>) {
    let fd = sleeper.socket.as_raw_fd();
    if let Err(error) = shared.registry.deregister(&mut SourceFd(&fd)) {
        tracing::debug!(%error, "could not deregister a hibernating socket");
    }
    // The broker gone, the connection closes with its socket.
    let Some(context) = shared.context.upgrade() else {
        return;
    };
    context.core.metrics.connections_hibernating.decrement();
    let tasks = context.core.tasks.clone();
    let _runtime = shared.runtime.enter();
    tasks.spawn(awake(context, sleeper));
}

/// A woken connection's task: the driver again, on the same endpoint.
/// (Its type is named, not inferred: the driver it runs can hibernate
/// again, which spawns this.)
fn awake(
    context: Arc<Context>,
    sleeper: Box<Sleeper>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(awake_inner(context, sleeper))
}

async fn awake_inner(context: Arc<Context>, sleeper: Box<Sleeper>) {
    let Sleeper {
        socket,
        endpoint,
        lease,
        guard,
        _running,
        max_packet,
    } = *sleeper;
    endpoint.inbox.forget_waker();
    // The client's address is the socket's peer: a connection that came
    // through a proxy (with a PROXY header) never hibernates.
    let peer = socket.peer_addr();
    let (stream, peer) = match peer.and_then(|peer| Ok((TcpStream::from_std(socket)?, peer))) {
        Ok(awake) => awake,
        Err(error) => {
            // The address is unknown once the socket is gone.
            let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
            lost(&context, endpoint, lease, unknown, guard, error).await;
            return;
        }
    };
    let (reader, writer) = stream.into_split();
    let session = rebuild(
        &context,
        (reader, writer, max_packet),
        endpoint,
        lease,
        peer,
        guard,
    );
    drop(_running);
    super::driver::run(&context, session).await;
}

/// Hibernates `session`'s connection: its task may end. When it cannot
/// (the thread did not start, the socket could not be registered), the
/// session comes back to be driven awake. When the socket itself is lost
/// on the way, the session ends as for a lost connection.
pub async fn hibernate<R, W>(
    context: &Arc<Context>,
    session: Box<Session<R, W>>,
) -> Result<(), Box<Session<R, W>>>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
    (R, W): Halves,
{
    let Some(shared) = context.core.hibernation.shared(context) else {
        return Err(session);
    };
    let Session {
        connection,
        mut endpoint,
        lease,
        peer,
        guard,
    } = *session;
    let max_packet = connection.max_packet_size();
    let socket = match connection.into_halves().into_socket() {
        Ok(socket) => socket,
        Err(error) => {
            lost(context, endpoint, lease, peer, guard, error).await;
            return Ok(());
        }
    };
    endpoint.outbox.release_buffer();
    endpoint.state.compact();
    let deadline = endpoint
        .next_deadline(tokio::time::Instant::now())
        .map(tokio::time::Instant::into_std);
    let inbox = Arc::clone(&endpoint.inbox);
    let fd = socket.as_raw_fd();
    let sleeper = Box::new(Sleeper {
        socket,
        endpoint,
        lease,
        guard,
        _running: context.core.tasks.hold(),
        max_packet,
    });
    let metrics = &context.core.metrics;
    // Counted before the thread can see it: it counts the waking.
    metrics.connections_hibernating.increment();
    let mut state = shared.lock();
    let key = state.insert(sleeper);
    // The inbox's waker goes in before anything can wake the connection
    // (under the lock, the thread cannot take it yet): put in later, it
    // could replace the waker of the task the connection woke into. The
    // lock order is the slab's, then the queue's: an inbox calls its
    // waker only after letting go of its queue, and drops wakers under it,
    // which for an `InboxWaker` takes no lock (it has no `Drop` of its own).
    let waker = Arc::new(InboxWaker {
        shared: Arc::downgrade(shared),
        key,
    });
    let awake = !inbox.hibernate(waker.into())
        // Edge-triggered: bytes that came before this still make it readable.
        || match shared.registry.register(
            &mut SourceFd(&fd),
            token(key),
            Interest::READABLE,
        ) {
            Ok(()) => false,
            Err(error) => {
                tracing::debug!(%error, "could not register a socket for hibernation");
                true
            }
        };
    if awake {
        // Something waits for the session already, or its socket could
        // not be watched: it goes on awake, in a task of its own again.
        if let Some(sleeper) = state.take(key) {
            drop(state);
            wake(shared, sleeper);
        }
        return Ok(());
    }
    // The thread waits for the earliest deadline it knew of: an earlier one
    // wakes it to wait for that instead.
    let earlier = deadline.filter(|deadline| {
        state
            .deadlines
            .peek()
            .is_none_or(|Reverse((earliest, _))| deadline < earliest)
    });
    if let Some(deadline) = deadline {
        state.deadlines.push(Reverse((deadline, key)));
        state.prune();
    }
    drop(state);
    if earlier.is_some() {
        shared.notify();
    }
    metrics.hibernations.increment();
    Ok(())
}

/// Ends a session whose socket was lost between hibernation and its
/// task: as a connection lost is ended (the will, the session's fate).
async fn lost(
    context: &Context,
    endpoint: Endpoint,
    lease: Lease,
    peer: SocketAddr,
    guard: Option<OpenConnection>,
    error: io::Error,
) {
    tracing::warn!(%error, client_id = %endpoint.client_id(), "lost a socket while it hibernated");
    let session = rebuild(
        context,
        (tokio::io::empty(), tokio::io::sink(), 0),
        endpoint,
        lease,
        peer,
        guard,
    );
    super::close::finish(context, session, Exit::Io(error)).await;
}

/// A session again from its hibernated parts, on a new reader and writer.
fn rebuild<R, W>(
    context: &Context,
    (reader, writer, max_packet): (R, W, u32),
    endpoint: Endpoint,
    lease: Lease,
    peer: SocketAddr,
    guard: Option<OpenConnection>,
) -> Box<Session<R, W>>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut connection = Connection::new(
        reader,
        writer,
        max_packet as usize,
        Arc::clone(&context.core.metrics),
    );
    connection.version = endpoint.outbox.version();
    Box::new(Session {
        connection,
        endpoint,
        lease,
        peer,
        guard,
    })
}
