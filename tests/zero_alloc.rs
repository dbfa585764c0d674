//! Parsing a typical `/imptr` query allocates nothing: proven with a
//! counting allocator, not assumed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use pixeld::pixel::query::{Key, Param, Query};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn parsing_a_typical_imptr_query_allocates_nothing() {
    let raw = String::from("id=2766&cachebuster=1732551234567&ancost=0.42&t=2&redir=https://ads.example.com/click?c=1&d=2");
    let before = ALLOCS.load(Ordering::SeqCst);
    let q = Query::parse(&raw, 8192).unwrap();
    let id = q.param(Key::Id);
    let cb = q.param(Key::Cachebuster);
    let ancost = q.param(Key::Ancost);
    let t = q.param(Key::T);
    let redir = q.redir();
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "parsing allocated");
    assert!(matches!(
        id,
        Param::Present(std::borrow::Cow::Borrowed("2766"))
    ));
    assert!(matches!(
        cb,
        Param::Present(std::borrow::Cow::Borrowed("1732551234567"))
    ));
    assert!(matches!(
        ancost,
        Param::Present(std::borrow::Cow::Borrowed("0.42"))
    ));
    assert!(matches!(t, Param::Present(std::borrow::Cow::Borrowed("2"))));
    assert!(matches!(
        redir,
        Param::Present(std::borrow::Cow::Borrowed(
            "https://ads.example.com/click?c=1&d=2"
        ))
    ));

    // The counter is live: a decoded value does allocate.
    let q = Query::parse("other=a%20b", 8192).unwrap();
    let before = ALLOCS.load(Ordering::SeqCst);
    let _ = q.param(Key::Other);
    assert!(ALLOCS.load(Ordering::SeqCst) > before);
}
