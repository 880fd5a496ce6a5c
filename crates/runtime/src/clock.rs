//! Time and identity sources, injected so tests can control them.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt;
use steward_core::Timestamp;
use steward_core::ids::IdGen;

/// Where the engine gets the time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// UUIDv7 identifiers: unique, and sortable by creation time.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidIds;

impl IdGen for UuidIds {
    fn next_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

/// A run id a person can type: `run-<base36 seconds>-<8 random base36 chars>`.
pub fn new_run_id(now: Timestamp) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut secs = (now.millis() / 1000).max(0) as u64;
    let mut time = Vec::new();
    loop {
        time.push(DIGITS[(secs % 36) as usize]);
        secs /= 36;
        if secs == 0 {
            break;
        }
    }
    time.reverse();
    let mut rng = rand::rng();
    let suffix: String = (0..8).map(|_| DIGITS[rng.random_range(0..36)] as char).collect();
    format!("run-{}-{suffix}", String::from_utf8_lossy(&time))
}
