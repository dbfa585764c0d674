//! The handlers' handle on the journal: open (recovery, then the writer
//! thread), the ways to append (from the request path without waiting,
//! from async code, from threads outside the runtime), and a clean stop
//! that writes everything queued before it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::progress::Shared;
use super::writer::{lock, Append, Core, Job, Writer};
use super::{frame, recovery};

/// Journal settings, from `[journal]` and `server.data_dir`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `data_dir/journal`.
    pub dir: PathBuf,
    pub fsync: bool,
    /// Disk budget: appends beyond it are refused (and counted).
    pub max_bytes: u64,
    /// A new segment file starts past this size.
    pub segment_bytes: u64,
}

/// Why an append did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// `max_bytes` reached.
    Full,
    /// The writer stopped, or the disk refused the write.
    Unavailable,
}

impl AppendError {
    pub fn reason(self) -> &'static str {
        match self {
            AppendError::Full => "journal_full",
            AppendError::Unavailable => "journal_unavailable",
        }
    }
}

/// Why [`Journal::try_append`] did not queue a record.
pub enum TryAppend {
    /// The queue is full: wait with [`Journal::append`] (the body is back).
    Busy(Vec<u8>),
    /// The writer has stopped.
    Closed,
}

/// The handlers' handle on the journal.
pub struct Journal {
    /// To the writer thread; bounded, so a stalled disk slows handlers
    /// rather than filling memory. Used in place by every handler (no lock,
    /// no clone of the sender per record: both wrote lines all workers share).
    tx: mpsc::Sender<Job>,
    /// Set by [`Journal::stop`]: appends after it are refused.
    stopped: AtomicBool,
    /// The progress every reader follows (cursors, the shipper, the
    /// engine, readiness): read through its methods.
    pub shared: Arc<Shared>,
    /// The writer thread, joined on [`Journal::stop`].
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The writer thread's stream (its own; each lane has another).
    core: Arc<Mutex<Core>>,
    /// For the lanes' streams; in `fsync` mode appends go to the writer
    /// thread only (see [`Journal::lanes_allowed`]).
    settings: Settings,
}

impl Journal {
    /// Opens (or creates) the journal, repairing a torn tail, and starts the
    /// writer thread.
    pub fn open(settings: &Settings) -> std::io::Result<Journal> {
        let shared = recovery::recover(settings)?;
        let (tx, rx) = mpsc::channel(65_536);
        let core = Arc::new(Mutex::new(Core::new(shared.clone(), settings)));
        let writer = Writer::new(rx, core.clone());
        let thread = crate::background::spawn("journal-writer", move || writer.run())?;
        Ok(Journal {
            tx,
            stopped: AtomicBool::new(false),
            shared,
            thread: Mutex::new(Some(thread)),
            core,
            settings: settings.clone(),
        })
    }

    /// A stream of its own for a serving thread's lane.
    pub(super) fn new_core(&self) -> Core {
        Core::new(self.shared.clone(), &self.settings)
    }

    /// Whether serving threads may group their own appends ([`super::lane`]).
    /// Not in `fsync` mode: a lane writes on its serving thread, which would
    /// then stop answering every one of its connections for each
    /// `fdatasync` (milliseconds); the writer thread waits for the disk
    /// instead while the serving threads go on, at the price of a handoff
    /// per record.
    pub fn lanes_allowed(&self) -> bool {
        !self.settings.fsync
    }

    /// True once [`Journal::stop`] began: appends are refused.
    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn sender(&self) -> Result<&mpsc::Sender<Job>, AppendError> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(AppendError::Unavailable);
        }
        Ok(&self.tx)
    }

    /// Queues one record body if the queue has room, without waiting: the
    /// receiver tells its sequence number once its group is written. The
    /// request path's way in; it falls back to [`Journal::append`] when busy.
    pub fn try_append(
        &self,
        body: Vec<u8>,
        ts_ms: u64,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, TryAppend> {
        let tx = self.sender().map_err(|_| TryAppend::Closed)?;
        let (done, wait) = oneshot::channel();
        match tx.try_send(Job::Append(Append { body, ts_ms, done })) {
            Ok(()) => Ok(wait),
            Err(mpsc::error::TrySendError::Full(Job::Append(a))) => Err(TryAppend::Busy(a.body)),
            Err(_) => Err(TryAppend::Closed),
        }
    }

    /// Appends one record body; resolves once its group is written (and
    /// fsynced in `fsync` mode).
    pub async fn append(&self, body: Vec<u8>, ts_ms: u64) -> Result<u64, AppendError> {
        let tx = self.sender()?;
        let (done, wait) = oneshot::channel();
        tx.send(Job::Append(Append { body, ts_ms, done }))
            .await
            .map_err(|_| AppendError::Unavailable)?;
        wait.await.unwrap_or(Err(AppendError::Unavailable))
    }

    /// Queues one record body for threads outside the runtime, without
    /// waiting for its group: the receiver tells how it went. Waiting per
    /// record would cost the caller two context switches each.
    pub fn append_queued(
        &self,
        body: Vec<u8>,
        ts_ms: u64,
    ) -> Result<oneshot::Receiver<Result<u64, AppendError>>, AppendError> {
        let tx = self.sender()?;
        let (done, wait) = oneshot::channel();
        tx.blocking_send(Job::Append(Append { body, ts_ms, done }))
            .map_err(|_| AppendError::Unavailable)?;
        Ok(wait)
    }

    /// [`Journal::append`] for threads outside the runtime (the engine uses
    /// a [`crate::delivery::Receipt`] instead: tests only).
    #[cfg(test)]
    pub fn append_blocking(&self, body: Vec<u8>, ts_ms: u64) -> Result<u64, AppendError> {
        self.append_queued(body, ts_ms)?
            .blocking_recv()
            .unwrap_or(Err(AppendError::Unavailable))
    }

    /// Writes what was appended so far and stops the writer.
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            // Queued behind every append sent before it; a full queue is
            // waited out (the writer is draining it). Not `blocking_send`:
            // a start-up that fails after the journal started drops it on
            // a runtime thread, where `blocking_send` panics.
            let mut job = Job::Stop;
            while let Err(mpsc::error::TrySendError::Full(back)) = self.tx.try_send(job) {
                job = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        // After the writer's last group; a lane's group after this is
        // refused, and one being written is waited for.
        lock(&self.core).stop();
        self.shared.stop_numbering();
    }

    /// A body for `append`: the Kafka message as it will be produced, and
    /// `aux` bytes for local readers (never produced).
    pub fn body(
        topic: crate::sink::Topic,
        headers: &[(&str, &[u8])],
        key: &[u8],
        payload: &[u8],
        aux: &[u8],
    ) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + key.len() + payload.len() + aux.len());
        frame::encode_body(&mut body, topic, headers, key, payload, aux);
        body
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.stop();
    }
}
