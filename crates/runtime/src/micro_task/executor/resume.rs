//! Where a session starts: the job's state loaded, with the crash recovery procedure run over its
//! ledger, or created (MT-001).

use super::*;

impl Executor<'_> {
    /// Loads the job's state, running the crash recovery procedure over its ledger, or creates it
    /// and emits MT-001.
    pub(super) async fn load_or_init(&self) -> Result<State> {
        if let (Some(pp), Some(lp)) = (self.read_doc(PROGRESS).await?, self.read_doc(LEDGER).await?) {
            if let Some(definitions) = self.read_json::<Value>(DEFINITIONS).await?
                && definitions != json!(self.plan.mts)
            {
                return Err(ExecError::PlanChanged { definitions: self.shown(DEFINITIONS) });
            }
            let mut progress: ProgressArtifact = self.parse(PROGRESS, &pp)?;
            let mut ledger: RunLedger = self.parse(LEDGER, &lp)?;
            let interrupted = ledger.steps.iter().any(|s| s.status == StepStatus::InProgress);
            if interrupted {
                // The outputs the interrupted steps got to save, read first: the recovery
                // procedure itself is pure.
                let mut outputs = HashMap::new();
                for s in ledger.steps.iter().filter(|s| s.status == StepStatus::InProgress) {
                    let name = step_doc(&s.idempotency_key, "output.json");
                    if let Some(bytes) = self.read_doc(&name).await? {
                        outputs.insert(s.idempotency_key.clone(), (name, bytes));
                    }
                }
                let recovery = recover(&mut ledger, |key| outputs.get(key).map(|(name, _)| name.clone()));
                // A recovered step's iteration is put back from its output, never re-asked.
                for step_id in &recovery.steps_recovered {
                    let Some(step) = ledger.steps.iter().find(|s| &s.step_id == step_id) else { continue };
                    let Some((name, bytes)) = outputs.get(&step.idempotency_key) else { continue };
                    let out: Value = self.parse(name, bytes)?;
                    let record = serde_json::from_value::<IterationRecord>(out["record"].clone());
                    let decision = serde_json::from_value::<LoopDecision>(out["decision"].clone());
                    if let (Ok(record), Ok(decision)) = (record, decision) {
                        let mt = step_id.rsplit_once("_iter-").map_or("", |(mt, _)| mt);
                        if let Some(idx) = progress.micro_tasks.iter().position(|e| e.mt_id == mt)
                            && !progress.micro_tasks[idx].iterations.iter().any(|r| r.iteration == record.iteration)
                        {
                            progress.settle(idx, record, &decision);
                        }
                    }
                }
                let st = State { progress, ledger };
                self.fence().await?;
                self.save_parts(&st).await?;
                self.emit(vec![Payload::recorded(
                    "workflow_recovery",
                    json!({
                        "workflow_run_id": self.run_id, "job_id": self.job_id, "wp_id": self.wp(), "reason": "crash",
                        "resume_point": recovery.resume_point, "steps_recovered": recovery.steps_recovered,
                        "steps_to_retry": recovery.steps_to_retry,
                    }),
                )])
                .await?;
                return Ok(st);
            }
            return Ok(State { progress, ledger });
        }
        let now = self.clock.now().to_rfc3339();
        let tasks: Vec<(&str, &str)> = self.plan.mts.iter().map(|m| (m.mt_id.as_str(), m.name.as_str())).collect();
        let progress = ProgressArtifact::start(self.wp(), self.job_id, &now, self.plan.policy.clone(), &tasks);
        let ledger = RunLedger {
            ledger_id: format!("{}-ledger", self.job_id),
            wp_id: self.wp().to_owned(),
            job_id: self.job_id.to_owned(),
            created_at: now,
            steps: Vec::new(),
            resume_point: None,
            resume_reason: None,
        };
        self.write_json(DEFINITIONS, &json!(self.plan.mts)).await?;
        let mut st = State { progress, ledger };
        self.save(&mut st).await?;
        self.mt_event(
            "micro_task_loop_started",
            json!({
                "wp_id": self.wp(), "total_mts": self.plan.mts.len(),
                "execution_policy": st.progress.policy, "mt_ids": self.plan.mts.iter().map(|m| &m.mt_id).collect::<Vec<_>>(),
                "execution_waves": self.plan.waves,
            }),
        )
        .await?;
        Ok(st)
    }
}
