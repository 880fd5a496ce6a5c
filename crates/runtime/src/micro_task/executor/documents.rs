//! The job's documents in the artifact store: their names, reading and writing them (every
//! write fenced), and the progress artifact and ledger saved after every change (DG-MT-07).
//! `metrics.json`, which is computed from the progress artifact, is written when a session of
//! the loop stops, not at every save: it adds nothing a crash could lose.

use super::*;

/// The job's documents (names kept from when they were files of its state directory).
pub(super) const PROGRESS: &str = "progress_artifact.json";
pub(super) const LEDGER: &str = "run_ledger.json";
pub(super) const METRICS: &str = "metrics.json";
pub(super) const DEFINITIONS: &str = "mt_definitions.json";

/// A document of one ledger step: `step_outputs/<idempotency key>/<file>`.
pub(super) fn step_doc(key: &str, file: &str) -> String {
    format!("step_outputs/{key}/{file}")
}

/// Marks a job cancelled in its documents (progress artifact and metrics), whether or not its
/// loop runs: a run cancelled while it waits at a gate has none. Returns the job's work packet
/// id, for MT-011; `None` for a job with no progress yet, or one that had already ended.
pub(crate) async fn cancel_documents(
    artifacts: &dyn ArtifactStore,
    job_id: &str,
    now: &str,
) -> std::result::Result<Option<String>, steward_artifacts::Error> {
    let Some(bytes) = artifacts.read_document(job_id, PROGRESS).await? else { return Ok(None) };
    let Ok(mut progress) = serde_json::from_slice::<ProgressArtifact>(&bytes) else { return Ok(None) };
    if !matches!(progress.status, ProgressStatus::InProgress | ProgressStatus::Paused) {
        return Ok(None);
    }
    progress.status = ProgressStatus::Cancelled;
    progress.current_state.pause = None;
    progress.updated_at = now.to_owned();
    let body = serde_json::to_vec_pretty(&progress).unwrap_or_default();
    artifacts.write_document(job_id, PROGRESS, &body).await?;
    let m = serde_json::to_vec_pretty(&metrics(&progress)).unwrap_or_default();
    artifacts.write_document(job_id, METRICS, &m).await?;
    Ok(Some(progress.wp_id))
}

impl Executor<'_> {
    /// A document of the job, named as its store shows it (for errors).
    pub(super) fn shown(&self, name: &str) -> String {
        format!("{}/{name}", self.artifacts.location(self.job_id))
    }

    pub(super) async fn read_doc(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.artifacts.read_document(self.job_id, name).await?)
    }

    /// A text document (a saved prompt or answer, written from a `String`).
    pub(super) async fn read_text(&self, name: &str) -> Result<Option<String>> {
        Ok(self.read_doc(name).await?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub(super) fn parse<T: serde::de::DeserializeOwned>(&self, name: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| ExecError::Corrupt { document: self.shown(name), message: e.to_string() })
    }

    pub(super) async fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.read_doc(name).await? {
            Some(bytes) => self.parse(name, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(super) async fn persist(&self, name: &str, bytes: &[u8]) -> Result<()> {
        Ok(self.artifacts.write_document(self.job_id, name, bytes).await?)
    }

    /// Writes documents that do not depend on one another in one batch (one directory sync
    /// per directory on the file system). A crash part way may leave some written and not the
    /// others, so a document that names another goes in a later call.
    pub(super) async fn persist_all(&self, docs: &[(&str, &[u8])]) -> Result<()> {
        Ok(self.artifacts.write_documents(self.job_id, docs).await?)
    }

    /// Writes JSON and returns its SHA-256.
    pub(super) async fn write_json(&self, name: &str, value: &Value) -> Result<String> {
        let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        self.persist(name, &bytes).await?;
        Ok(hash(&bytes))
    }

    /// Persists the progress artifact and the ledger (DG-MT-07: counters after every iteration).
    pub(super) async fn save(&self, st: &mut State) -> Result<()> {
        self.fence().await?;
        st.progress.updated_at = self.clock.now().to_rfc3339();
        self.save_parts(st).await
    }

    /// Refuses to go on writing once the run is no longer this loop's.
    pub(super) async fn fence(&self) -> Result<()> {
        self.sink.check().await.map_err(ExecError::Fenced)
    }

    /// Writes the progress artifact and the ledger, in one batch: recovery (`recover`) takes
    /// either one as it finds it, so neither depends on the other being the newer.
    pub(super) async fn save_parts(&self, st: &State) -> Result<()> {
        let progress = serde_json::to_vec_pretty(&st.progress).unwrap_or_default();
        let ledger = serde_json::to_vec_pretty(&st.ledger).unwrap_or_default();
        for (name, bytes, cap) in [
            (PROGRESS, &progress, steward_micro_task::state::MAX_PROGRESS_BYTES),
            (LEDGER, &ledger, steward_micro_task::state::MAX_LEDGER_BYTES),
        ] {
            if bytes.len() > cap {
                return Err(ExecError::Corrupt {
                    document: self.shown(name),
                    message: format!("{} bytes is over the {cap}-byte cap", bytes.len()),
                });
            }
        }
        self.persist_all(&[(PROGRESS, &progress), (LEDGER, &ledger)]).await
    }

    /// Writes `metrics.json` from the progress artifact as it is saved now: when a session of
    /// the loop stops, however it stopped (nothing, if the job has no progress yet).
    pub(super) async fn save_metrics(&self) -> Result<()> {
        let Some(progress) = self.read_json::<ProgressArtifact>(PROGRESS).await? else { return Ok(()) };
        let m = serde_json::to_vec_pretty(&metrics(&progress)).unwrap_or_default();
        self.persist(METRICS, &m).await
    }
}
