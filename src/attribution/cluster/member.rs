//! Start and stop: check the topics, choose the guarantee (and with it the
//! producer), create the consumer, join the group, run the member thread;
//! stop finishes the batch in hand, commits and leaves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::info;

use super::broker_quirks::{Coverage, GapGuard};
use super::changelog::UserState;
use super::guarantee::{self, Guarantee};
use super::membership::MemberCtx;
use super::poll::{BrokerTrouble, Liveness, Runner};
use super::work::Work;
use super::{topics, ClusterError, Settings, Status};
use crate::config::Catalog;
use crate::ids::UserId;
use crate::telemetry::{metric, RateLimit};

/// Owns the member thread; [`Member::stop`] finishes the batch in hand,
/// commits, and leaves the group.
pub struct Member {
    pub status: Arc<Status>,
    /// Shared with the member thread (for [`Member::dump`]).
    work: Arc<Mutex<Work>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ClusterError>>>,
}

impl Member {
    /// Checks the topics, joins the group and starts consuming.
    pub fn start(
        settings: Settings,
        catalog: Arc<ArcSwap<Catalog>>,
        replication: i32,
    ) -> Result<Member, ClusterError> {
        let partitions = topics::check(
            &settings.consumer,
            &settings.topics,
            replication,
            Duration::from_secs(30),
        )?;
        let (output, guarantee) = guarantee::choose(&settings)?;
        let mut settings = settings;
        if guarantee == Guarantee::ExactlyOnce {
            // Inputs, and the changelog a restore reads, as committed: an
            // aborted transaction's writes are never read back.
            settings.consumer.set("isolation.level", "read_committed");
        }
        metric::cluster_exactly_once(guarantee == Guarantee::ExactlyOnce);
        info!(
            partitions,
            group = %settings.group_id,
            guarantee = guarantee.describe(),
            transactional_id = output.transactional().then_some(settings.transactional_id.as_str()),
            "attribution topics are co-partitioned; joining the group"
        );
        let status = Arc::new(Status::default());
        let work = Arc::new(Mutex::new(Work::new(
            settings.clone(),
            catalog,
            status.clone(),
            output,
        )));
        let liveness = Arc::new(Liveness::new(settings.session_timeout_ms as u64));
        let trouble = Arc::new(BrokerTrouble::default());
        let consumer = consumer(&settings, work.clone(), liveness.clone(), trouble.clone())?;
        let names: Vec<String> = settings.topics.inputs.values().cloned().collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|e| ClusterError::kafka("subscribe", e))?;
        // A live owner's commit waits at most a grace and a commit interval
        // behind its log; three session timeouts more and nobody owns it.
        let stall =
            Duration::from_millis(3 * settings.session_timeout_ms as u64 + settings.grace_ms)
                + 2 * settings.commit_interval;
        let stop = Arc::new(AtomicBool::new(false));
        let runner = Runner {
            consumer,
            work: work.clone(),
            stop: stop.clone(),
            liveness,
            trouble,
            names,
            partitions,
            gaps: GapGuard::default(),
            coverage: Coverage::new(stall),
        };
        let thread = std::thread::Builder::new()
            .name("attribute".into())
            .spawn(move || runner.run())
            .map_err(|e| ClusterError::Thread(format!("could not start: {e}")))?;
        Ok(Member {
            status,
            work,
            stop,
            thread: Some(thread),
        })
    }

    /// Every owned partition's state as its changelog would restore it, by
    /// partition number (tests compare a member's memory with a restore).
    pub fn dump(&self) -> Vec<(i32, Vec<(UserId, UserState)>)> {
        let work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        work.partitions
            .iter()
            .map(|(p, w)| (*p, w.dump()))
            .collect()
    }

    /// True once the member thread ended on its own (an error).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Finishes the batch in hand, commits, leaves the group.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ClusterError::Thread("panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn consumer(
    settings: &Settings,
    work: Arc<Mutex<Work>>,
    liveness: Arc<Liveness>,
    trouble: Arc<BrokerTrouble>,
) -> Result<BaseConsumer<MemberCtx>, ClusterError> {
    let mut config = settings.consumer.clone();
    config
        .set("group.id", &settings.group_id)
        .set("partition.assignment.strategy", "range")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout_ms / 4).max(100).to_string(),
        );
    config
        .create_with_context(MemberCtx {
            work,
            log: RateLimit::new(10_000),
            liveness,
            trouble,
        })
        .map_err(|e| ClusterError::kafka("consumer", e))
}
