//! Memory per user holding one impression and one click, measured two ways:
//! the bytes the allocator hands out (live heap), and the process's resident
//! set growth; then what a click's remembered source click id (100 bytes,
//! about Google's and Meta's) adds, in live heap. `cargo bench --bench
//! attribution_memory`
//! (run without `--bench`, as `cargo test --all-targets` does, it checks
//! itself on 10k users.)

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

use pixeld::attribution::{Mark, State, TouchKind};
use pixeld::event::{OwnedSourceClick, SourceClickKind};
use pixeld::ids::{EventId, LineItemId, PlacementId, PublisherId, UserId};

/// Counts live bytes on top of the allocator pixeld runs with.
struct Counting;

static INNER: pixeld::alloc::HugePages = pixeld::alloc::HugePages;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let users: u64 = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let heap_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss_bytes();
    let state = fill(users, None);
    let heap = (LIVE.load(Ordering::Relaxed) - heap_before) as f64 / users as f64;
    let rss = rss_bytes().saturating_sub(rss_before) as f64 / users as f64;
    assert_eq!(state.users() as u64, users);
    assert_eq!(state.entries() as u64, 2 * users);
    println!("attribution memory: {users} users, one impression and one click each");
    println!("  live heap (allocator):  {heap:.1} bytes/user");
    println!("  resident set growth:    {rss:.1} bytes/user");
    println!("  target:                 128 bytes/user");
    drop(state);

    // The same users, each click with a source click id: the id's box, its
    // mark in the user's list, the list and the user's slot in the map.
    let id = "G".repeat(100);
    let heap_before = LIVE.load(Ordering::Relaxed);
    let state = fill(users, Some(&id));
    let with_id = (LIVE.load(Ordering::Relaxed) - heap_before) as f64 / users as f64;
    assert_eq!(state.entries() as u64, 3 * users);
    println!(
        "  with a {}-byte source click id: {with_id:.1} bytes/user, {:.1} more",
        id.len(),
        with_id - heap
    );
}

/// A state of `users` users with one impression and one click each, the
/// click carrying `source_click_id` when given.
fn fill(users: u64, source_click_id: Option<&str>) -> State {
    let state = State::default();
    let ts = 1_800_000_000_000;
    for u in 0..users {
        let uid = UserId((u as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        let view = Mark::new(
            EventId::new_v7(ts),
            2766,
            PublisherId(777),
            Some(PlacementId(4242)),
        );
        let click = Mark::new(
            EventId::new_v7(ts + 1000),
            21378,
            PublisherId(777),
            Some(PlacementId(4242)),
        );
        let source =
            source_click_id.and_then(|id| OwnedSourceClick::new(SourceClickKind::Gclid, id));
        state.touch(uid, LineItemId(5001), TouchKind::View, view);
        state.touch_with(uid, LineItemId(5001), TouchKind::Click, click, source);
    }
    state
}
