//! Why a run's work stops: one cancellation token per driven run, and the reason it fired.
//!
//! Every way of stopping a run's steps ends their commands the same way (SIGTERM to the group,
//! then SIGKILL after the grace); what differs is how the stopped attempts are recorded. A
//! cancel ends them `cancelled`; a signal to the engine ends them `interrupted` and releases
//! the run, so that `steward resume` continues it without charging the steps a retry.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// The reason a run's work was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// An operator cancelled the run.
    Cancelled,
    /// The run ended (it failed) while some of its steps still ran.
    RunEnded,
    /// Another process holds the run now (it recovered or cancelled it).
    TakenAway,
    /// This engine is shutting down on the named signal: the run is released, not ended.
    Interrupted(&'static str),
}

/// A run's stop switch. Clones share it; the first reason given wins.
///
/// Before it stops, a run may be asked to drain: start nothing new, let what runs finish, then
/// hand the run back (a worker shutting down gracefully).
#[derive(Debug, Clone, Default)]
pub struct Halt {
    token: CancellationToken,
    why: Arc<OnceLock<Stop>>,
    drain: CancellationToken,
}

impl Halt {
    /// A switch that has not fired.
    pub fn new() -> Halt {
        Halt::default()
    }

    /// Stops the work, for `why` unless it was already stopped for another reason.
    pub fn stop(&self, why: Stop) {
        let _ = self.why.set(why);
        self.token.cancel();
    }

    /// Asks the run to start nothing new and be handed back once its steps have finished.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Whether it was asked to drain.
    pub fn draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Resolves once it is asked to drain.
    pub async fn drained(&self) {
        self.drain.cancelled().await
    }

    /// The token commands and model calls are cancelled by.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Why it fired, if it did.
    pub fn why(&self) -> Option<Stop> {
        self.why.get().copied()
    }

    /// The signal the engine is stopping on, when that is why the work stopped.
    pub fn interrupted(&self) -> Option<&'static str> {
        match self.why() {
            Some(Stop::Interrupted(signal)) => Some(signal),
            _ => None,
        }
    }
}
