//! The load's request log (`ms uid kind status` a line): what the pixels
//! answered, to find events answered but never published.

use std::collections::HashMap;

use super::seen::Seen;
use super::windows::Window;

pub struct Sent {
    pub ms: u64,
    pub uid: String,
    pub kind: String,
    /// 0: no answer.
    pub status: u16,
}

pub fn read(path: &str) -> Vec<Sent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(Sent {
                ms: f.next()?.parse().ok()?,
                uid: f.next()?.to_string(),
                kind: f.next()?.to_string(),
                status: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Answered requests of the window whose event is not (yet) in Kafka: per
/// user and type, the published events match the earliest requests; the
/// requests left over are unpublished.
pub fn unpublished(sent: &[Sent], seen: &Seen, w: &Window) -> usize {
    let mut of: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
    for s in sent.iter().filter(|s| matches!(s.status, 200 | 302)) {
        of.entry((&s.uid, &s.kind)).or_default().push(s.ms);
    }
    let mut n = 0;
    for ((uid, kind), times) in of {
        let published = seen
            .published
            .get(&(uid.to_string(), kind.to_string()))
            .copied()
            .unwrap_or(0);
        n += times
            .iter()
            .skip(published)
            .filter(|ms| w.holds(**ms))
            .count();
    }
    n
}

/// Requests of the window that got no answer.
pub fn failed(sent: &[Sent], w: &Window) -> usize {
    sent.iter()
        .filter(|s| w.holds(s.ms) && !matches!(s.status, 200 | 302))
        .count()
}
