//! What a backend's writer did in this process: how many writes each group commit carried and
//! how long it took, for the server's metrics.

use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the batch-size histogram's buckets (writes per commit).
pub const BATCH_SIZE_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 512];

/// Upper bounds of the commit-duration histogram's buckets, in seconds.
pub const COMMIT_SECONDS_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0];

/// The writer's group commits so far (cumulative histograms, as Prometheus wants them).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CommitStats {
    /// Transactions committed (or tried).
    pub commits: u64,
    /// Writes they carried.
    pub writes: u64,
    /// Commits with at most `BATCH_SIZE_BUCKETS[i]` writes.
    pub size_buckets: [u64; BATCH_SIZE_BUCKETS.len()],
    /// Commits that took at most `COMMIT_SECONDS_BUCKETS[i]`.
    pub seconds_buckets: [u64; COMMIT_SECONDS_BUCKETS.len()],
    /// Their total duration.
    pub seconds_sum: f64,
}

/// Where a writer records its commits; shared with whoever reads them.
#[derive(Debug, Default)]
pub struct CommitRecorder(Mutex<CommitStats>);

impl CommitRecorder {
    /// One transaction of `writes` writes that took `took`, from its start to its durable commit.
    pub fn record(&self, writes: usize, took: Duration) {
        let mut s = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let secs = took.as_secs_f64();
        s.commits += 1;
        s.writes += writes as u64;
        s.seconds_sum += secs;
        for (i, le) in BATCH_SIZE_BUCKETS.iter().enumerate() {
            s.size_buckets[i] += u64::from(writes as u64 <= *le);
        }
        for (i, le) in COMMIT_SECONDS_BUCKETS.iter().enumerate() {
            s.seconds_buckets[i] += u64::from(secs <= *le);
        }
    }

    /// What was recorded so far.
    pub fn snapshot(&self) -> CommitStats {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_fall_into_cumulative_buckets() {
        let r = CommitRecorder::default();
        r.record(1, Duration::from_micros(300));
        r.record(40, Duration::from_millis(3));
        let s = r.snapshot();
        assert_eq!((s.commits, s.writes), (2, 41));
        assert_eq!(s.size_buckets, [1, 1, 1, 1, 1, 1, 2, 2, 2]);
        assert_eq!(s.seconds_buckets, [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]);
    }
}
