//! The global allocator pixeld runs with: mimalloc, asking the kernel for
//! transparent huge pages on large blocks.
//!
//! mimalloc also replaces `malloc` for the C code in the process (its
//! `override` feature), librdkafka included: a produced message is
//! allocated on one thread and freed on another, a pattern that glibc's
//! allocator pays for with arena locks and consolidation (measured: 10% of
//! the request thread's time and 28% of the shipper's in malloc).
//!
//! The attribution state is a few large tables read at random (one user per
//! event); with 4 KiB pages nearly every lookup also misses the TLB. Most
//! kernels ship THP in `madvise` mode, so the blocks must ask for it. Measured
//! on the engine benchmark: +80% throughput (see README).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

/// Blocks at least this large are advised to use huge pages.
const HUGE: usize = 2 << 20;

pub struct HugePages;

fn advise(ptr: *mut u8, size: usize) {
    if ptr.is_null() || size < HUGE {
        return;
    }
    let page = 4096usize;
    let start = (ptr as usize).div_ceil(page) * page;
    let end = (ptr as usize + size) / page * page;
    if end > start {
        // Advice only: failure (no THP support) changes nothing.
        // SAFETY: the range lies inside a block the allocator just handed out.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        advise(p, new_size);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_their_contents_across_every_kind_of_resize() {
        let a = HugePages;
        let sizes = [64, HUGE - 1, HUGE, 3 * HUGE + 5, 100, 8 * HUGE, HUGE + 1];
        unsafe {
            let mut layout = Layout::from_size_align(sizes[0], 8).unwrap();
            let mut p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert!((0..layout.size()).all(|i| *p.add(i) == 0));
            for (i, &next) in sizes.iter().enumerate().skip(1) {
                let keep = layout.size().min(next);
                for j in 0..keep {
                    *p.add(j) = (j % 251) as u8 ^ i as u8;
                }
                p = a.realloc(p, layout, next);
                assert!(!p.is_null());
                assert!(
                    (0..keep).all(|j| *p.add(j) == (j % 251) as u8 ^ i as u8),
                    "{next}"
                );
                layout = Layout::from_size_align(next, 8).unwrap();
                // The whole new block is writable.
                *p.add(next - 1) = 1;
            }
            a.dealloc(p, layout);
            let big = Layout::from_size_align(HUGE * 2, 16).unwrap();
            let z = a.alloc_zeroed(big);
            assert!((0..big.size()).step_by(4093).all(|i| *z.add(i) == 0));
            a.dealloc(z, big);
        }
    }
}
