//! The `duplicate_order_id` warning on a conversion event: a hint, at the
//! moment the event is made, that this instance already saw the order id
//! for the same pixel and user within the pixel's `dedup_minutes`.
//!
//! The attribution record is the authority (`counted: false`, `reason:
//! "duplicate"`): the engine sees every instance's conversions and keeps
//! its orders across restarts, this table only what this process answered
//! since it started, so a duplicate that reached another instance, or came
//! after a restart, has no warning. The table is bounded: past
//! [`CAPACITY`] entries, expired ones are dropped, and if none has expired
//! new orders are not remembered (and counted) until some do.

use dashmap::DashMap;

use crate::config::Catalog;
use crate::event::{Body, Event};
use crate::telemetry::metric;

/// The most orders remembered: about 40 MB at most.
pub const CAPACITY: usize = 1_000_000;

/// The warning's code.
pub const WARNING: &str = "duplicate_order_id";

/// Orders seen by this instance: a keyed hash of (pixel, user, order id)
/// to (first sighting, the pixel's window), both in ms.
pub struct RecentOrders {
    seen: DashMap<u64, (u64, u64), ahash::RandomState>,
    /// Keyed per process: crafted order ids cannot collide on purpose.
    hasher: ahash::RandomState,
    capacity: usize,
}

impl Default for RecentOrders {
    fn default() -> Self {
        RecentOrders::with_capacity(CAPACITY)
    }
}

impl RecentOrders {
    pub fn with_capacity(capacity: usize) -> RecentOrders {
        RecentOrders {
            seen: DashMap::default(),
            hasher: ahash::RandomState::new(),
            capacity,
        }
    }

    /// Adds the warning to `event` when it is a conversion whose order this
    /// instance already saw; remembers the order otherwise.
    pub fn flag(&self, event: &mut Event<'_>, catalog: &Catalog) {
        let Body::Conversion(cv) = &event.body else {
            return;
        };
        let Some(order) = cv.order_id.as_deref().filter(|o| !o.is_empty()) else {
            return;
        };
        let Some(pixel) = catalog.conversion_pixels.get(&cv.pixel_id) else {
            return;
        };
        let Some(user) = crate::event::input::partition_user(event) else {
            return;
        };
        if pixel.dedup_ms == 0 {
            return;
        }
        let key = self.hasher.hash_one((cv.pixel_id.0, user.0, order));
        let ts = event.common.ts_ms;
        if let Some(first) = self.seen.get(&key) {
            if ts.abs_diff(first.0) <= first.1 {
                event.common.warnings.push(WARNING);
                return;
            }
        }
        if self.seen.len() >= self.capacity {
            self.seen
                .retain(|_, (first, window)| ts.saturating_sub(*first) <= *window);
            if self.seen.len() >= self.capacity {
                metric::recent_orders_full();
                return;
            }
        }
        self.seen.insert(key, (ts, pixel.dedup_ms));
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Common, Conversion, ConversionSource, Warnings};
    use crate::ids::{AdvertiserId, EventId, PixelId, UserId};

    fn catalog() -> std::sync::Arc<Catalog> {
        crate::attribution::tests::catalog(crate::attribution::tests::RULES)
    }

    fn conversion(uid: u128, pixel: u32, order: &str, ts: u64) -> Event<'static> {
        Event {
            common: Common {
                event_id: EventId::new_v7(ts),
                ts_ms: ts,
                uid: Some(UserId(uid)),
                new_uid: false,
                ip: None,
                user_agent: None,
                referer: None,
                warnings: Warnings::default(),
                ivt: None,
                consent: None,
            },
            body: Body::Conversion(Conversion {
                pixel_id: PixelId(pixel),
                advertiser_id: AdvertiserId(1),
                order_id: Some(order.to_string().into()),
                value_micros: None,
                other: None,
                segments_added: Vec::new(),
                segments_removed: Vec::new(),
                redir: None,
                click: None,
                source: ConversionSource::Browser,
            }),
        }
    }

    fn flagged(r: &RecentOrders, mut e: Event<'static>) -> bool {
        r.flag(&mut e, &catalog());
        e.common.warnings.contains(WARNING)
    }

    #[test]
    fn the_same_order_of_the_same_user_and_pixel_is_flagged_within_its_window() {
        let r = RecentOrders::default();
        let t = 1_800_000_000_000;
        assert!(!flagged(&r, conversion(1, 100, "A1", t)));
        assert!(flagged(&r, conversion(1, 100, "A1", t + 60_000)));
        assert!(!flagged(&r, conversion(2, 100, "A1", t)), "another user");
        assert!(!flagged(&r, conversion(1, 101, "A1", t)), "another pixel");
        assert!(!flagged(&r, conversion(1, 100, "", t)), "no order id");
        assert!(!flagged(&r, conversion(1, 100, "", t)));
        let week = 10_080 * 60_000;
        assert!(
            !flagged(&r, conversion(1, 100, "A1", t + week + 1)),
            "window over"
        );
    }

    #[test]
    fn a_full_table_drops_expired_orders_and_never_grows_past_its_capacity() {
        let r = RecentOrders::with_capacity(10);
        let t = 1_800_000_000_000;
        for i in 0..10 {
            flagged(&r, conversion(i, 100, "A", t));
        }
        assert!(!flagged(&r, conversion(99, 100, "A", t + 1)), "not kept");
        assert_eq!(r.len(), 10);
        let later = t + 10_081 * 60_000;
        assert!(!flagged(&r, conversion(99, 100, "A", later)));
        assert_eq!(r.len(), 1, "the expired ones went");
        assert!(flagged(&r, conversion(99, 100, "A", later + 1)));
    }
}
