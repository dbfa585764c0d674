//! Background threads (journal writer, shipper, attribution engine) must not
//! take the CPU from the request path the moment they are woken: on a busy
//! core every such wake-up is a context switch pair per event, and it keeps
//! the writer's groups small. They run as `SCHED_BATCH`, which the kernel
//! never lets preempt a running thread on wake-up; they still get their fair
//! share, and run at once whenever the request path waits.

use std::io;
use std::thread::JoinHandle;

/// Spawns a named thread that runs as a batch (non-preempting) thread.
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            batch_priority();
            f()
        })
}

/// Marks the calling thread `SCHED_BATCH`; where that is refused, it stays
/// an ordinary thread (correct, only slower under load).
pub fn batch_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` lives across the call.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn background_threads_run_as_batch() {
        let policy = super::spawn("t", || unsafe { libc::sched_getscheduler(0) })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(policy, libc::SCHED_BATCH);
        // The caller is untouched.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
