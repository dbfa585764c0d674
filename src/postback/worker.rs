//! One destination's queue and the calls it runs: at most `concurrency`
//! attempts at once (a call waiting for its next attempt holds no slot),
//! at most `rate_per_s` started per second, each call retried with backoff
//! up to `max_attempts`, then dead-lettered. At most `queue_capacity`
//! calls are queued or under way: a slow destination fills only its own
//! queue, and the consumer pauses the partitions that feed a full one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};

use super::call::{self, HttpClient, Outcome};
use super::destination::{Call, Destination};
use super::log::{About, Log};
use crate::telemetry::metric;

/// One call to make for one record.
pub struct Job {
    pub partition: i32,
    pub offset: i64,
    /// The partition's assignment epoch when the record was read.
    pub epoch: u64,
    pub about: About,
    pub call: Call,
}

/// A call that is over: delivered or dead-lettered.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub partition: i32,
    pub offset: i64,
    pub epoch: u64,
}

/// What every destination's calls share.
pub struct Shared {
    pub client: HttpClient,
    pub log: Log,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub finished: crossbeam_channel::Sender<Finished>,
    /// Set at SIGTERM: no new attempt starts; a call waiting for its next
    /// attempt is left unfinished (its record is not committed, so the
    /// next owner calls again with the same idempotency key).
    pub stop: watch::Receiver<bool>,
    /// Calls between their first attempt and their end.
    pub in_flight: AtomicUsize,
    /// Each owned partition's assignment epoch: a call of a record whose
    /// partition was revoked (and maybe assigned again) stops before its
    /// next attempt; the new owner's copy of the record makes the call.
    pub epochs: Mutex<HashMap<i32, u64>>,
}

impl Shared {
    pub fn set_epoch(&self, partition: i32, epoch: Option<u64>) {
        let mut e = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        match epoch {
            Some(n) => e.insert(partition, n),
            None => e.remove(&partition),
        };
    }

    fn current(&self, job: &Job) -> bool {
        let e = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        e.get(&job.partition) == Some(&job.epoch)
    }
}

/// The consumer's side of a destination's queue.
pub struct Queue {
    pub destination: Arc<Destination>,
    pub tx: mpsc::Sender<Job>,
    /// Queued and in-flight calls (`forward_queue_depth`).
    pub depth: Arc<AtomicUsize>,
}

/// Starts the destination's worker on the current runtime.
pub fn start(destination: Arc<Destination>, capacity: usize, shared: Arc<Shared>) -> Queue {
    let (tx, rx) = mpsc::channel(capacity);
    let depth = Arc::new(AtomicUsize::new(0));
    tokio::spawn(run(
        destination.clone(),
        rx,
        shared,
        depth.clone(),
        capacity,
    ));
    Queue {
        destination,
        tx,
        depth,
    }
}

async fn run(
    d: Arc<Destination>,
    mut rx: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
) {
    // Calls taken from the queue and not ended: with the queue's own
    // capacity, what one destination holds is bounded.
    let calls = Arc::new(Semaphore::new(capacity));
    let slots = Arc::new(Semaphore::new(d.concurrency));
    let rate = Arc::new(Rate::new(d.rate_per_s));
    while let Some(job) = rx.recv().await {
        let Ok(call) = calls.clone().acquire_owned().await else {
            break;
        };
        let (d, shared, rate, depth, slots) = (
            d.clone(),
            shared.clone(),
            rate.clone(),
            depth.clone(),
            slots.clone(),
        );
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            deliver(&job, &d, &shared, &rate, &slots).await;
            depth.fetch_sub(1, Ordering::Relaxed);
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(call);
        });
    }
}

/// Attempts until an end; reports the end to the consumer.
async fn deliver(job: &Job, d: &Destination, shared: &Shared, rate: &Rate, slots: &Semaphore) {
    let mut stop = shared.stop.clone();
    for n in 1..=d.max_attempts {
        let Ok(slot) = slots.acquire().await else {
            return;
        };
        rate.wait().await;
        if *stop.borrow() || !shared.current(job) {
            return;
        }
        let (outcome, latency) = call::attempt(&shared.client, &job.call, d.timeout).await;
        drop(slot);
        metric::forward_attempt(&d.id, outcome.label(), latency.as_secs_f64());
        shared
            .log
            .attempt(d, job.about, &job.call, n, &outcome, latency);
        let after = match &outcome {
            Outcome::Delivered(_) => return finish(job, shared),
            Outcome::Final { .. } => {
                metric::forward_dead_letter(&d.id, "final_answer");
                shared.log.dead(d, job.about, &job.call, n, &outcome);
                return finish(job, shared);
            }
            Outcome::Retry { .. } if n == d.max_attempts => {
                metric::forward_dead_letter(&d.id, "attempts_exhausted");
                shared.log.dead(d, job.about, &job.call, n, &outcome);
                return finish(job, shared);
            }
            Outcome::Retry { after, .. } => *after,
        };
        metric::forward_retry(&d.id);
        let wait = call::backoff(n + 1, shared.backoff, shared.max_backoff, after);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn finish(job: &Job, shared: &Shared) {
    let _ = shared.finished.send(Finished {
        partition: job.partition,
        offset: job.offset,
        epoch: job.epoch,
    });
}

/// Spaces the starts of attempts `1 / rate` apart.
struct Rate {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Rate {
    fn new(per_second: u32) -> Rate {
        Rate {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}
