//! A task's files: its stage, made from the workspace and the changes its iterations applied,
//! an answer's changes applied to it once, and the promotion of a completed task's recorded writes into the workspace (all or nothing,
//! finished after a crash, never over a change someone made meanwhile).

use super::*;

/// The promotion document of a task: what its completion writes into the workspace.
pub(super) fn promotion_doc(mt_id: &str) -> String {
    format!("promotions/{mt_id}.json")
}

/// What the task's declared files were in the workspace when its stage was first made (their
/// SHA-256, or null for a file that did not exist): a promotion over a file someone changed
/// since would lose their change.
pub(super) fn base_doc(mt_id: &str) -> String {
    format!("promotions/{mt_id}.base.json")
}

/// The SHA-256 of a workspace file's content, or `None` when there is none.
pub(super) fn content_hash(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| steward_core::sha256_hex(&b))
}

impl Executor<'_> {
    /// Applies an answer's changes to the task's stage, once: the complete contents they give
    /// are saved before any file is replaced, so a crash in the middle re-applies exactly these
    /// instead of planning the answer's edits again against files it already changed; an
    /// `applied` mark says it happened. `Err` says why nothing was applied (and whether it was a
    /// scope violation).
    pub(super) async fn apply(
        &self,
        key: &str,
        content: &str,
        mt: &MicroTaskDefinition,
        root: &Path,
    ) -> Result<std::result::Result<(), (Option<FailureCategory>, String)>> {
        let applied_marker = step_doc(key, "applied");
        if self.read_doc(&applied_marker).await?.is_some() {
            return Ok(Ok(()));
        }
        let planned_doc = step_doc(key, "planned_writes.json");
        // A file the task created is the task's to rewrite on a later iteration.
        let modifiable: Vec<String> = mt.writable().cloned().collect();
        let saved = self
            .read_doc(&planned_doc)
            .await?
            .and_then(|bytes| serde_json::from_slice::<Vec<edits::FileWrite>>(&bytes).ok());
        let scope = |is: bool| is.then_some(FailureCategory::ScopeViolation);
        let writes = match saved {
            Some(writes) => writes,
            None => match edits::parse_changes(content) {
                Err(e) => return Ok(Err((None, format!("unreadable change block: {e}")))),
                Ok(changes) => match edits::plan_changes(&changes, &modifiable, &mt.files.create, |p| {
                    std::fs::read_to_string(root.join(p)).ok()
                }) {
                    Ok(writes) => writes,
                    Err(e) => return Ok(Err((scope(e.is_scope_violation()), format!("{}: {e}", e.category())))),
                },
            },
        };
        self.fence().await?;
        self.write_json(&planned_doc, &json!(writes)).await?;
        if let Err(why) = stage::write_files(root, &writes)? {
            return Ok(Err((scope(true), format!("scope_violation: {why}"))));
        }
        self.persist(&applied_marker, b"").await?;
        Ok(Ok(()))
    }

    /// Each applied iteration's writes of the task, in order: the complete contents it gave each
    /// file, as recorded before they were written.
    pub(super) async fn applied_writes(
        &self,
        st: &State,
        mt: &MicroTaskDefinition,
    ) -> Result<Vec<Vec<edits::FileWrite>>> {
        let mut batches = Vec::new();
        for s in st.ledger.steps.iter().filter(|s| s.step_id.starts_with(&format!("{}_", mt.mt_id))) {
            if self.read_doc(&step_doc(&s.idempotency_key, "applied")).await?.is_none() {
                continue;
            }
            let planned = step_doc(&s.idempotency_key, "planned_writes.json");
            if let Some(writes) = self.read_json::<Vec<edits::FileWrite>>(&planned).await? {
                batches.push(writes);
            }
        }
        Ok(batches)
    }

    /// The task's stage, made (from the workspace and the changes its iterations applied so
    /// far) if this machine does not have it.
    pub(super) async fn staged(&self, st: &State, mt: &MicroTaskDefinition) -> Result<PathBuf> {
        let dir = self.stage.join(&mt.mt_id);
        if dir.join(stage::READY).is_file() {
            return Ok(dir);
        }
        let batches = self.applied_writes(st, mt).await?;
        // What the task's files were when it began, for the promotion's lost-update check.
        if self.read_doc(&base_doc(&mt.mt_id)).await?.is_none() {
            let base: serde_json::Map<String, Value> =
                mt.writable().map(|p| (p.clone(), json!(content_hash(&self.plan.root.join(p))))).collect();
            self.write_json(&base_doc(&mt.mt_id), &Value::Object(base)).await?;
        }
        // Every stage is left out too (this job's and other jobs'), should the workspace hold
        // the temporary directory they are made in.
        let stages = self.stage.parent().unwrap_or(self.stage).to_path_buf();
        let skip: Vec<PathBuf> = self.engine_dirs.iter().cloned().chain([self.stage.to_path_buf(), stages]).collect();
        stage::ensure(&self.plan.root, &dir, &skip, || batches)?;
        Ok(dir)
    }

    /// Writes a completed task's changes into the workspace, once: the promotion document says
    /// what, the `.done` mark that it happened. The task's stage goes with it. A declared file
    /// someone changed in the workspace since the task began is not overwritten: the promotion is
    /// refused whole (`Some(why)`), their change stays, and the task's result stays in its
    /// promotion document.
    pub(super) async fn promote(&self, mt_id: &str) -> Result<Option<String>> {
        let doc = promotion_doc(mt_id);
        let done = format!("{doc}.done");
        if self.read_doc(&done).await?.is_some() {
            return Ok(None);
        }
        let Some(writes) = self.read_json::<Vec<edits::FileWrite>>(&doc).await? else { return Ok(None) };
        let base: serde_json::Map<String, Value> = self.read_json(&base_doc(mt_id)).await?.unwrap_or_default();
        // A file is someone else's change when it is neither what the task began with nor what
        // this promotion writes (a crash in the middle of the renames leaves some of those).
        let changed: Vec<&str> = writes
            .iter()
            .filter(|w| {
                let now = content_hash(&self.plan.root.join(&w.path));
                let ours = Some(steward_core::sha256_hex(w.content.as_bytes()));
                now != ours && base.get(&w.path).is_some_and(|b| *b != json!(now))
            })
            .map(|w| w.path.as_str())
            .collect();
        if !changed.is_empty() {
            return Ok(Some(format!(
                "{} changed in the workspace while {mt_id} worked on it; the workspace was left as it is and the task's result is in {}",
                changed.join(", "),
                self.shown(&doc)
            )));
        }
        self.fence().await?;
        if let Err(why) = stage::write_files(&self.plan.root, &writes)? {
            // The workspace changed under the task (a symlink where its file was): nothing of
            // it was written, and the person is told.
            return Err(ExecError::Workspace {
                path: self.plan.root.clone(),
                source: std::io::Error::other(format!("cannot promote {mt_id}: {why}")),
            });
        }
        self.persist(&done, b"").await?;
        stage::remove(&self.stage.join(mt_id));
        Ok(None)
    }
}
