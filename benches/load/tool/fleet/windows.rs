//! The campaign's cycles: the script appends `NAME START_MS` when a cycle
//! starts and `end MS` when the load stopped. A conversion belongs to the
//! cycle during which it was sent: cycle k is [start k, start k+1), and the
//! first also takes the warm-up before it.

pub struct Window {
    pub name: String,
    pub lo: u64,
    pub hi: u64,
}

impl Window {
    pub fn holds(&self, ms: u64) -> bool {
        (self.lo..self.hi).contains(&ms)
    }
}

/// Cycle `k` (from 1) of the file; None until the next cycle (or the end)
/// started. Cycle 0 is the whole run (`all`), once it ended: what a record
/// that came after its cycle's check changes.
pub fn window(path: &str, k: usize) -> Option<Window> {
    let text = std::fs::read_to_string(path).expect("the cycles file");
    let marks: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let (name, ms) = l.split_once(' ')?;
            Some((name.to_string(), ms.trim().parse().ok()?))
        })
        .collect();
    if k == 0 {
        let (last, hi) = marks.last()?;
        let hi = (last == "end").then_some(*hi)?;
        let name = "all".to_string();
        return Some(Window { name, lo: 0, hi });
    }
    let (name, start) = marks.get(k - 1)?;
    let (_, hi) = marks.get(k)?;
    Some(Window {
        name: name.clone(),
        lo: if k == 1 { 0 } else { *start },
        hi: *hi,
    })
}
