//! Durable state: retained messages and persistent sessions (their
//! subscriptions, queued and in-flight QoS 1/2 messages, QoS 2 packet ids
//! awaiting PUBREL, and wills waiting for their delay) in an embedded redb
//! database in `data_dir`.
//!
//! Nothing here is on the QoS 0 path. Sessions and the router only take
//! note of a change ([`Store`]'s methods and its [`Journal`] side push an
//! operation onto a queue and return); one writer thread owns the database
//! and applies what has queued up in one transaction (group commit: the
//! changes of every client since the last commit share one sync). With
//! `durability = "sync"` a session holds back an acknowledgement until
//! [`Store::durable`] has reached the operations it acknowledges, and the
//! writer wakes it through its inbox when that happens.

mod apply;
mod load;
pub mod records;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::config::{Config, Durability};
use crate::metrics::Metrics;
use crate::protocol::{LastWill, PacketId, SubscriptionOptions, TopicFilter};
use crate::router::inbox::Inbox;
use crate::router::message::{Delivery, Message};
use crate::router::Journal;
pub use load::{Loaded, StoredEntry, StoredSession};

/// The store's file inside `data_dir`.
pub const FILE_NAME: &str = "petrel.redb";

/// The store could not be opened or read: start-up stops with this.
#[derive(Debug, thiserror::Error)]
#[error("store {}: {message}", path.display())]
pub struct StoreError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl StoreError {
    fn new(path: &Path, message: impl Into<String>) -> StoreError {
        StoreError {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// One change for the writer to apply.
#[derive(Debug)]
enum Op {
    Session {
        client_id: Arc<str>,
        record: records::SessionRecord,
    },
    RemoveSession(Arc<str>),
    Subscribe {
        client_id: Arc<str>,
        filter: String,
        record: records::SubscriptionRecord,
    },
    Unsubscribe {
        client_id: Arc<str>,
        filter: String,
    },
    Entry {
        client_id: Arc<str>,
        delivery: Delivery,
        packet_id: Option<u16>,
        released: bool,
        /// Queued just now: the entry did not exist before this operation.
        fresh: bool,
    },
    RemoveEntry {
        client_id: Arc<str>,
        message_id: u64,
    },
    Pubrel {
        client_id: Arc<str>,
        packet_id: u16,
        awaited: bool,
    },
    Will {
        client_id: Arc<str>,
        record: Option<Box<records::WillRecord>>,
    },
    Retained {
        topic: String,
        message: Option<Arc<Message>>,
    },
}

#[derive(Debug, Default)]
struct Pending {
    ops: Vec<Op>,
    /// The sequence number of the last operation queued.
    seq: u64,
    /// Sessions to wake after the next commit.
    waiters: Vec<Arc<Inbox>>,
    closing: bool,
}

#[derive(Debug)]
struct Inner {
    pending: Mutex<Pending>,
    /// Signalled when operations are queued or the store closes.
    work: Condvar,
    /// The sequence number of the last operation committed (and synced,
    /// with `durability = "sync"`).
    durable: AtomicU64,
    durability: Durability,
    metrics: Arc<Metrics>,
}

impl Inner {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The durable store: a handle shared by every session, and the writer
/// thread behind it.
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir` and reads it. A
    /// store written by another format version, one that is corrupt, or
    /// one in use by another process is an error naming the file: the
    /// broker never starts empty over data it could not read.
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<(Store, Loaded), StoreError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|error| StoreError::new(dir, format!("cannot create directory: {error}")))?;
        let path = dir.join(FILE_NAME);
        let (database, loaded, counts) = load::open(&path, config.store_cache_bytes)?;
        let inner = Arc::new(Inner {
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            durable: AtomicU64::new(0),
            durability: config.durability,
            metrics,
        });
        let writer = writer::Writer::new(
            database,
            counts,
            Arc::clone(&inner),
            std::time::Duration::from_millis(config.flush_interval_ms),
        );
        let thread = std::thread::Builder::new()
            .name("petrel-store".to_owned())
            .spawn(move || writer.run())
            .map_err(|error| StoreError::new(&path, format!("cannot start writer: {error}")))?;
        let store = Store {
            inner,
            writer: Mutex::new(Some(thread)),
            path,
        };
        Ok((store, loaded))
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether acknowledgements wait for the disk (`durability = "sync"`).
    pub fn is_sync(&self) -> bool {
        self.inner.durability == Durability::Sync
    }

    /// The sequence number of the last change queued: once
    /// [`Store::durable`] reaches it, every change made so far is durable.
    pub fn submitted(&self) -> u64 {
        self.inner.pending().seq
    }

    /// The sequence number of the last change committed.
    pub fn durable(&self) -> u64 {
        self.inner.durable.load(Ordering::Acquire)
    }

    /// Wakes `inbox`'s session once a commit has reached `ticket` (at
    /// once if one has).
    pub fn wake_when_durable(&self, ticket: u64, inbox: &Arc<Inbox>) {
        if inbox.await_store() {
            self.inner.pending().waiters.push(Arc::clone(inbox));
        }
        // The writer publishes `durable` before it takes the waiters, so a
        // commit that raced the registration is seen here.
        if self.durable() >= ticket {
            inbox.wake_from_store();
        }
    }

    fn submit(&self, op: Op) {
        let mut pending = self.inner.pending();
        pending.seq += 1;
        let was_empty = pending.ops.is_empty();
        pending.ops.push(op);
        drop(pending);
        if was_empty {
            self.inner.work.notify_one();
        }
    }

    /// A persistent session was opened (or resumed) by a connection: its
    /// will, if one was waiting, is cancelled.
    pub fn session_opened(&self, client_id: &Arc<str>, expiry_interval: u32) {
        self.submit(Op::Will {
            client_id: Arc::clone(client_id),
            record: None,
        });
        self.submit(Op::Session {
            client_id: Arc::clone(client_id),
            record: records::SessionRecord {
                expiry_interval,
                disconnected_at_ms: None,
            },
        });
    }

    /// A persistent session's client disconnected; `will` waits for its
    /// delay until the given time.
    pub fn session_closed(
        &self,
        client_id: &Arc<str>,
        expiry_interval: u32,
        will: Option<(&LastWill, std::time::SystemTime)>,
    ) {
        self.submit(Op::Session {
            client_id: Arc::clone(client_id),
            record: records::SessionRecord {
                expiry_interval,
                disconnected_at_ms: Some(records::now_ms()),
            },
        });
        if let Some((will, due)) = will {
            let due_at_ms = due
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            self.submit(Op::Will {
                client_id: Arc::clone(client_id),
                record: Some(Box::new(records::WillRecord::of(will, due_at_ms))),
            });
        }
    }

    /// A session ended (expired, discarded by a clean start, or closed
    /// with no expiry): everything it had goes.
    pub fn session_removed(&self, client_id: &Arc<str>) {
        self.submit(Op::RemoveSession(Arc::clone(client_id)));
    }

    /// A session's delayed will was published.
    pub fn will_published(&self, client_id: &Arc<str>) {
        self.submit(Op::Will {
            client_id: Arc::clone(client_id),
            record: None,
        });
    }

    /// A session subscribed (or changed a subscription's options).
    pub fn subscribed(
        &self,
        client_id: &Arc<str>,
        filter: &TopicFilter,
        options: SubscriptionOptions,
        identifier: Option<std::num::NonZeroU32>,
    ) {
        self.submit(Op::Subscribe {
            client_id: Arc::clone(client_id),
            filter: filter.as_str().to_owned(),
            record: records::SubscriptionRecord::of(options, identifier),
        });
    }

    /// A session unsubscribed.
    pub fn unsubscribed(&self, client_id: &Arc<str>, filter: &TopicFilter) {
        self.submit(Op::Unsubscribe {
            client_id: Arc::clone(client_id),
            filter: filter.as_str().to_owned(),
        });
    }

    /// A delivery was sent with `packet_id`, or (QoS 2) released.
    pub fn sent(
        &self,
        client_id: &Arc<str>,
        delivery: &Delivery,
        packet_id: PacketId,
        released: bool,
    ) {
        self.submit(Op::Entry {
            client_id: Arc::clone(client_id),
            delivery: delivery.clone(),
            packet_id: Some(packet_id.get()),
            released,
            fresh: false,
        });
    }

    /// A delivery waits in a session's queue (written again if it was
    /// already: retained messages for a new subscription are not
    /// journaled as they are queued).
    pub fn kept(&self, client_id: &Arc<str>, delivery: &Delivery) {
        self.submit(Op::Entry {
            client_id: Arc::clone(client_id),
            delivery: delivery.clone(),
            packet_id: None,
            released: false,
            fresh: false,
        });
    }

    /// A delivery is finished with: acknowledged, expired, refused, or
    /// handed to another session.
    pub fn completed(&self, client_id: &Arc<str>, message_id: u64) {
        self.submit(Op::RemoveEntry {
            client_id: Arc::clone(client_id),
            message_id,
        });
    }

    /// An inbound QoS 2 packet id now awaits PUBREL (`true`), or was
    /// released (`false`).
    pub fn pubrel(&self, client_id: &Arc<str>, packet_id: PacketId, awaited: bool) {
        self.submit(Op::Pubrel {
            client_id: Arc::clone(client_id),
            packet_id: packet_id.get(),
            awaited,
        });
    }

    /// Commits what is queued, syncs, and stops the writer. Later changes
    /// are not written.
    pub fn close(&self) {
        self.inner.pending().closing = true;
        self.inner.work.notify_one();
        let thread = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "store writer panicked");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl Journal for Store {
    fn queued(&self, client_id: &Arc<str>, delivery: &Delivery) {
        self.submit(Op::Entry {
            client_id: Arc::clone(client_id),
            delivery: delivery.clone(),
            packet_id: None,
            released: false,
            fresh: true,
        });
    }

    fn retained(&self, topic: &str, message: Option<&Arc<Message>>) {
        self.submit(Op::Retained {
            topic: topic.to_owned(),
            message: message.cloned(),
        });
    }
}
