//! The open-file limit against the connections the config allows: a
//! listener out of descriptors accepts nothing, so the cap that answers
//! 503 would never fire and both listeners would go dark instead (issue 25,
//! finding 8: 300 half-sent requests under `ulimit -n 256`).
//!
//! At start the soft limit is raised to what is needed, up to the hard
//! limit (as nginx's `worker_rlimit_nofile` does); what still does not fit
//! is reported to the caller, which refuses a `server.max_connections` that
//! was set and lowers the default one, saying so.

/// Descriptors kept for everything but client connections: the journal's
/// segments, Kafka's sockets, the runtime's own (a quarter of a small
/// limit).
pub const RESERVED: u64 = 128;

/// The open-file limit, as read (and perhaps raised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit was raised from this.
    pub raised_from: Option<u64>,
}

impl FdLimit {
    /// Client connections this limit allows.
    pub fn connections(&self) -> u64 {
        self.soft.saturating_sub(RESERVED.min(self.soft / 4))
    }
}

/// Raises the soft limit to `needed` descriptors if the hard limit allows;
/// `Err` with the limit when it does not (the soft limit then is the hard
/// one).
pub fn ensure(needed: u64) -> Result<FdLimit, FdLimit> {
    let Some((soft, hard)) = get() else {
        // Unknown (not Linux, or the call failed): nothing to compare.
        return Ok(FdLimit {
            soft: u64::MAX,
            hard: u64::MAX,
            raised_from: None,
        });
    };
    if soft >= needed {
        return Ok(FdLimit {
            soft,
            hard,
            raised_from: None,
        });
    }
    let target = needed.min(hard);
    let now = if set(target, hard) { target } else { soft };
    let limit = FdLimit {
        soft: now,
        hard,
        raised_from: (now != soft).then_some(soft),
    };
    if now >= needed {
        Ok(limit)
    } else {
        Err(limit)
    }
}

// `rlim_t` is `u64` on Linux and narrower elsewhere: the casts stay.
#[allow(clippy::unnecessary_cast)]
fn get() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer to a
    // local; it keeps no reference.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    ok.then_some((r.rlim_cur as u64, r.rlim_max as u64))
}

#[allow(clippy::unnecessary_cast)]
fn set(soft: u64, hard: u64) -> bool {
    let r = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one `rlimit` through a valid pointer to a
    // local; it keeps no reference.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_fits_is_kept_and_what_does_not_is_reported_with_the_limit() {
        let (soft, hard) = get().expect("Linux");
        assert_eq!(
            ensure(soft),
            Ok(FdLimit {
                soft,
                hard,
                raised_from: None
            })
        );
        let beyond = ensure(hard.saturating_add(1)).unwrap_err();
        assert_eq!(beyond.hard, hard);
        assert!(beyond.soft <= hard);
    }
}
