//! One window's verdict: each conversion sent in it against its records and
//! against the reference.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::seen::Seen;
use super::windows::Window;

/// The fields two records of one conversion must agree on: the decision and
/// the record's own id (consumers deduplicate by it).
const DECISION: [&str; 5] = [
    "counted",
    "attributed",
    "kind",
    "touch_event_id",
    "event_id",
];

/// Examples kept per kind of failure, for the report.
const EXAMPLES: usize = 5;

#[derive(Default)]
pub struct Verdict {
    pub conversions: usize,
    /// No record at all.
    pub missing: usize,
    /// Two records that differ in a [`DECISION`] field.
    pub disagreeing: usize,
    /// A record not flagged late that differs from the reference (its
    /// `late` flag aside).
    pub wrong: usize,
    /// Conversions with a record flagged late.
    pub late: usize,
    /// Records flagged late that differ from the reference: the grace let
    /// later events through first, and the fleet promises the time-ordered
    /// answer only for events within the grace (README, Scaling out), so
    /// these are counted apart.
    pub wrong_late: usize,
    /// Records beyond the first of their conversion.
    pub duplicates: usize,
    /// The reference's answers (kind or reason), to show the mix is varied.
    pub answers: BTreeMap<String, usize>,
    /// Missing records by partition: a partition nobody owns loses them all.
    pub missing_by_partition: BTreeMap<i32, usize>,
    pub examples: Vec<Value>,
}

/// Equal but for `late`: a late record says so, and that is its right.
fn same_answer(got: &Value, want: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().map(|o| o.remove("late"));
        v
    };
    strip(got) == strip(want)
}

fn answer(v: &Value) -> String {
    v["kind"]
        .as_str()
        .or(v["reason"].as_str())
        .unwrap_or("?")
        .to_string()
}

pub fn judge(seen: &Seen, reference: &HashMap<String, Value>, w: &Window) -> Verdict {
    let mut v = Verdict::default();
    let mut ids: Vec<(&String, u64)> = seen
        .conversions
        .iter()
        .filter(|(_, c)| w.holds(c.ts))
        .map(|(id, c)| (id, c.ts))
        .collect();
    ids.sort_by_key(|(_, ts)| *ts);
    for (id, _) in ids {
        v.conversions += 1;
        let want = reference.get(id.as_str());
        if let Some(want) = want {
            *v.answers.entry(answer(want)).or_default() += 1;
        }
        let records = seen.records.get(id.as_str()).map_or(&[][..], Vec::as_slice);
        judge_one(&mut v, seen, id, records, want);
    }
    v
}

fn judge_one(v: &mut Verdict, seen: &Seen, id: &str, records: &[Value], want: Option<&Value>) {
    let at = &seen.conversions[id];
    let place = json!({"partition": at.partition, "offset": at.offset, "ts": at.ts});
    let example = |v: &mut Verdict, what: &str, got: Value| {
        if v.examples.iter().filter(|e| e["what"] == what).count() < EXAMPLES {
            let want = want.cloned().unwrap_or(Value::Null);
            v.examples.push(
                json!({"what": what, "conversion": id, "at": place, "got": got, "want": want}),
            );
        }
    };
    let Some(first) = records.first() else {
        v.missing += 1;
        *v.missing_by_partition.entry(at.partition).or_default() += 1;
        example(v, "missing", Value::Null);
        return;
    };
    v.duplicates += records.len() - 1;
    v.late += usize::from(records.iter().any(|r| r["late"] == true));
    if records
        .iter()
        .any(|r| DECISION.iter().any(|k| r[k] != first[k]))
    {
        v.disagreeing += 1;
        example(v, "disagreeing", Value::from(records.to_vec()));
    }
    if let Some(bad) = records
        .iter()
        .find(|r| !want.is_some_and(|w| same_answer(r, w)))
    {
        let late = bad["late"] == true;
        match late {
            true => v.wrong_late += 1,
            false => v.wrong += 1,
        }
        example(v, if late { "wrong_late" } else { "wrong" }, bad.clone());
    }
}
