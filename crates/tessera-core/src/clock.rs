//! Time is injected everywhere through [`Clock`], so tests can move it and no code calls
//! `now()` on its own.

use std::sync::Mutex;
use time::{Duration, OffsetDateTime};

pub trait Clock: Send + Sync + 'static {
    /// The current time in UTC, truncated to whole microseconds so that a value survives a
    /// round trip through PostgreSQL (which stores microseconds) unchanged.
    fn now(&self) -> OffsetDateTime;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_micros(OffsetDateTime::now_utc())
    }
}

/// A clock that only moves when told to: for tests of expiry and lifetimes.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(truncate_to_micros(start)))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.microsecond();
    t.replace_nanosecond(micros * 1_000).unwrap_or(t)
}
