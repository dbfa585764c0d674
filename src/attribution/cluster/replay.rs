//! What-if replay (`pixeld attribute --replay`): the same inputs, other rules.
//! Reads the input topics from the offsets of a time (Kafka's
//! offsets-for-times), one partition number at a time, applies the given
//! config's rules in event-time order with a fresh engine (no group commits,
//! no changelog), writes the records to another topic and sums them up.
//!
//! Touches older than `from` still matter (a click three days before it), so
//! reading starts the longest window of the config earlier; conversions
//! before `from` are applied (they set repeat marks) but not written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use super::output::RecordMessage;
use super::{ClusterError, ClusterTopics, InputTopic};
use crate::attribution::{Attribution, Engine, Input, State};
use crate::config::Catalog;
use crate::sink::transactional::NamedProducer;

/// What to replay.
pub struct Replay {
    pub producer: ClientConfig,
    pub consumer: ClientConfig,
    pub topics: ClusterTopics,
    /// Conversions at or after this time (ms) are written...
    pub from_ms: u64,
    /// ...and before this one.
    pub to_ms: u64,
    pub output_topic: String,
}

/// The answer ad ops read.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub conversions: u64,
    pub counted: u64,
    /// Attributed, by kind (`post_click`, `post_view`).
    pub attributed: BTreeMap<String, u64>,
    /// Not attributed, by reason.
    pub not_attributed: BTreeMap<String, u64>,
    pub inputs_read: u64,
    pub seconds: f64,
}

impl Summary {
    fn add(&mut self, a: &Attribution) {
        self.conversions += 1;
        self.counted += a.decision.counted as u64;
        match (&a.decision.credit, a.decision.reason) {
            (Some(c), _) => *self.attributed.entry(c.kind.as_str().into()).or_default() += 1,
            (None, r) => {
                let r = r.map_or("unknown", |r| r.as_str());
                *self.not_attributed.entry(r.into()).or_default() += 1
            }
        }
    }
}

impl Replay {
    pub fn run(&self, catalog: Arc<Catalog>) -> Result<Summary, ClusterError> {
        let started = Instant::now();
        let longest = catalog
            .conversion_pixels
            .values()
            .map(|p| p.post_view_ms.max(p.post_click_ms))
            .max()
            .unwrap_or(0);
        let read_from = self.from_ms.saturating_sub(longest);
        let reader: BaseConsumer = self
            .consumer
            .clone()
            .set("group.id", "pixeld-replay")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| ClusterError::kafka("replay reader", e))?;
        let producer = NamedProducer::new(&self.producer)
            .map_err(|e| ClusterError::kafka("replay producer", e))?;
        let meta = reader
            .fetch_metadata(
                Some(&self.topics.inputs[InputTopic::Impressions]),
                Duration::from_secs(10),
            )
            .map_err(|e| ClusterError::kafka("metadata", e))?;
        let partitions = meta
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let catalog = Arc::new(ArcSwap::new(catalog));
        let mut summary = Summary::default();
        let mut buf = Vec::new();
        for p in 0..partitions {
            let inputs = self.read_partition(&reader, p, read_from)?;
            summary.inputs_read += inputs.len() as u64;
            let engine = Engine::new(Arc::new(State::default()), catalog.clone());
            for input in inputs {
                let Some(record) = engine.apply(input) else {
                    continue;
                };
                let ts = record.conversion.ts_ms;
                if ts < self.from_ms || ts >= self.to_ms {
                    continue;
                }
                summary.add(&record);
                self.write(&producer, &record, &mut buf)?;
            }
        }
        producer
            .flush(Duration::from_secs(60))
            .map_err(|e| ClusterError::Delivery {
                what: "flush".into(),
                source: Some(e),
            })?;
        if let Some(failed) = producer.failures() {
            return Err(ClusterError::refused(failed));
        }
        summary.seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
        Ok(summary)
    }

    /// Produces one record to the output topic, keyed by user (the seam's
    /// key rule: no user, a NULL key), waiting while the queue is full.
    fn write(
        &self,
        producer: &NamedProducer,
        record: &Attribution,
        buf: &mut Vec<u8>,
    ) -> Result<(), ClusterError> {
        let message = RecordMessage::encode(record, buf);
        producer
            .send(
                &self.output_topic,
                None,
                message.key(),
                Some(buf),
                message.headers(),
            )
            .map_err(|source| ClusterError::Refused {
                what: format!("producing to {}", self.output_topic),
                source,
            })
    }

    /// Partition `p` of the inputs from `from_ms` on (events up to
    /// `to_ms`), sorted by time then event id.
    fn read_partition(
        &self,
        reader: &BaseConsumer,
        p: i32,
        from_ms: u64,
    ) -> Result<Vec<Input>, ClusterError> {
        let mut query = TopicPartitionList::new();
        let replayed = self.topics.inputs.iter().filter(|(t, _)| t.replayed());
        for (_, topic) in replayed {
            query
                .add_partition_offset(topic, p, Offset::Offset(from_ms as i64))
                .map_err(|e| ClusterError::kafka("offsets for times", e))?;
        }
        let start = reader
            .offsets_for_times(query, Duration::from_secs(10))
            .map_err(|e| ClusterError::kafka("offsets for times", e))?;
        let mut tpl = TopicPartitionList::new();
        let mut open = 0;
        for e in start.elements() {
            // No message at or after the time: nothing to read there.
            if let Offset::Offset(o) = e.offset() {
                tpl.add_partition_offset(e.topic(), p, Offset::Offset(o))
                    .map_err(|e| ClusterError::kafka("replay assignment", e))?;
                open += 1;
            }
        }
        let mut inputs = Vec::new();
        if open == 0 {
            return Ok(inputs);
        }
        reader
            .assign(&tpl)
            .map_err(|e| ClusterError::kafka("replay assignment", e))?;
        let mut quiet = Instant::now();
        while open > 0 && quiet.elapsed() < Duration::from_secs(5) {
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    quiet = Instant::now();
                    let Some(topic) = self.topics.inputs.position(m.topic()) else {
                        continue;
                    };
                    let input = topic
                        .event_type(&m)
                        .and_then(|kind| m.payload().and_then(|b| Input::from_json(kind, b)));
                    if let Some(input) = input.filter(|i| i.ts_ms() < self.to_ms) {
                        inputs.push(input);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
                Some(Err(e)) => return Err(ClusterError::kafka("reading the inputs", e)),
                None => {}
            }
        }
        inputs.sort_by_key(|i| (i.ts_ms(), i.event_id()));
        Ok(inputs)
    }
}

/// Parses `2026-10-01T00:00:00Z` (UTC, whole seconds, optional `.sss`) into
/// milliseconds since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 24 + h) * 60 + mi) * 60 + se;
    u64::try_from(total * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_milliseconds() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2026-10-01T00:00:00Z"), Some(1_790_812_800_000));
        assert_eq!(
            parse_time("2026-11-26T21:30:05.250Z"),
            Some(1_795_728_605_250)
        );
        assert_eq!(parse_time("2026-11-26 21:30:05"), None);
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }
}
