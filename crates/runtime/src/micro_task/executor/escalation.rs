//! An escalation's records: the escalation record, MT-005, the model switch, and the distillation
//! candidate (DG-MT-18) each escalation writes.

use super::*;

impl Executor<'_> {
    /// Writes (or rewrites) the distillation candidate of the escalation that `student` made,
    /// with its teacher's success once there is one, and emits MT-015. Trust and eligibility are
    /// computed from the task's `history` (`learning::trust`), never set.
    pub(super) async fn distillation_candidate(
        &self,
        st: &State,
        mt: &MicroTaskDefinition,
        student: &IterationRecord,
        teacher: Option<&IterationRecord>,
        history: &[IterationRecord],
    ) -> Result<()> {
        let at = |level: u32| history.iter().filter(|r| r.escalation_level == level).count();
        // The saved answer of an iteration: its output, where the job's documents keep it.
        let output_ref = |r: &IterationRecord| {
            let step = ledger_step_id(&mt.mt_id, r.iteration);
            st.ledger
                .steps
                .iter()
                .find(|s| s.step_id == step)
                .map(|s| self.shown(&step_doc(&s.idempotency_key, "response.txt")))
        };
        let trust = learning::trust(history, student, teacher);
        let candidate = json!({
            "skill_log_entry_id": learning::candidate_id(self.job_id, &mt.mt_id, student.iteration),
            "mt_id": mt.mt_id, "wp_id": self.wp(),
            "student_attempt": {
                "model_id": student.model_id, "lora_id": student.lora_id,
                "prompt_snapshot_ref": student.context_snapshot_id, "output_snapshot_ref": output_ref(student),
                "outcome": learning::StudentOutcome::of(student),
                "iterations": at(student.escalation_level),
            },
            "teacher_success": teacher.map(|t| json!({
                "model_id": t.model_id, "lora_id": t.lora_id,
                "prompt_snapshot_ref": t.context_snapshot_id, "output_snapshot_ref": output_ref(t),
                "outcome": "VALIDATION_PASSED", "iterations": at(t.escalation_level),
            })),
            "task_type_tags": mt.task_tags,
            "contributing_factors": [student.error_summary],
            "data_trust_score": trust.data_trust_score,
            "distillation_eligible": trust.distillation_eligible,
            "status": "LOGGING_ONLY_PHASE_1",
        });
        let name = format!("distillation/{}-{}.json", mt.mt_id, student.iteration);
        let hash = self.write_json(&name, &candidate).await?;
        self.mt_event(
            "micro_task_distillation_candidate",
            json!({"wp_id": self.wp(), "mt_id": mt.mt_id, "candidate_ref": {"path": name, "sha256": hash}}),
        )
        .await
    }

    /// Records the escalation (record file and MT-005); true when the next rung is the hard gate.
    pub(super) async fn escalate(
        &self,
        st: &mut State,
        mt: &MicroTaskDefinition,
        idx: usize,
        category: FailureCategory,
        it: &Iteration,
    ) -> Result<bool> {
        let policy = st.progress.policy.clone();
        let from = st.progress.current_state.active_model_level;
        let next = policy.next_model_level(from);
        let from_model = policy.level(from).map(EscalationLevel::model).unwrap_or_default().to_owned();
        let to_level = next.unwrap_or_else(|| {
            policy.escalation_chain.iter().find(|l| l.stops_for_human()).map_or(from + 1, |l| l.level)
        });
        let to_model = policy.level(to_level).map(EscalationLevel::model).unwrap_or("HARD_GATE").to_owned();
        let at_level = st.progress.micro_tasks[idx].iterations.iter().filter(|r| r.escalation_level == from).count();
        let record = json!({
            "mt_id": mt.mt_id, "wp_id": self.wp(), "created_at": self.clock.now().to_rfc3339(),
            "escalation_chain": [{
                "level": from, "model_id": from_model, "iterations": at_level,
                "failure_pattern": category.as_str(), "last_error": it.record.error_summary,
                "tokens_used": it.record.tokens_prompt + it.record.tokens_completion,
                "outcome": if next.is_some() { "ESCALATE" } else { "HARD_GATE" },
            }],
            "remediation": {"failure_category": category.as_str(), "contributing_factors": [it.record.error_summary]},
        });
        let name = format!("{}-{}.json", mt.mt_id, it.record.iteration);
        let sha = self.write_json(&format!("escalations/{name}"), &record).await?;
        if policy.enable_distillation {
            // Every escalation has its candidate, whether a success ever follows (the teacher is
            // added then) or the task ends at the hard gate or in an abort.
            let history = st.progress.micro_tasks[idx].iterations.clone();
            self.distillation_candidate(st, mt, &it.record, None, &history).await?;
        }
        st.progress.escalated(idx, category, next, format!("escalations/{name}"));
        self.save(st).await?;
        self.mt_event(
            "micro_task_escalated",
            json!({
                "wp_id": self.wp(), "mt_id": mt.mt_id, "from_model": from_model, "from_level": from,
                "to_model": to_model, "to_level": to_level, "reason": it.record.error_summary.clone().unwrap_or_else(|| category.as_str().to_owned()),
                "failure_category": category.as_str(), "iterations_at_previous_level": at_level,
                "escalation_record_ref": {"path": format!("escalations/{name}"), "sha256": sha},
            }),
        )
        .await?;
        if let Some(level) = next {
            self.model_switch(&policy, Some(&mt.mt_id), from, level, "escalation").await?;
        }
        Ok(next.is_none())
    }
}
