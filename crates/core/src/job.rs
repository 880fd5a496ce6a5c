//! The AI Job Model fields a run carries, and the (job_kind, profile_id, protocol_id) contract.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::state::UnknownValue;

/// The canonical job kinds (§2.6.6.2.8.1). Parsing is strict (HSK-JOB-100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum JobKind {
    DocEdit,
    DocRewrite,
    DocSummarize,
    SheetTransform,
    CanvasCluster,
    AsrTranscribe,
    WorkflowRun,
    ModelRun,
    MicroTaskExecution,
    SpecRouter,
    DebugBundleExport,
    TerminalExec,
    DocIngest,
    LoomAutoTag,
    LoomAutoCaption,
    LoomBatchLink,
    DistillationEval,
}

impl JobKind {
    /// All 17 canonical kinds.
    pub const ALL: [JobKind; 17] = [
        JobKind::DocEdit,
        JobKind::DocRewrite,
        JobKind::DocSummarize,
        JobKind::SheetTransform,
        JobKind::CanvasCluster,
        JobKind::AsrTranscribe,
        JobKind::WorkflowRun,
        JobKind::ModelRun,
        JobKind::MicroTaskExecution,
        JobKind::SpecRouter,
        JobKind::DebugBundleExport,
        JobKind::TerminalExec,
        JobKind::DocIngest,
        JobKind::LoomAutoTag,
        JobKind::LoomAutoCaption,
        JobKind::LoomBatchLink,
        JobKind::DistillationEval,
    ];

    /// The canonical string.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::DocEdit => "doc_edit",
            JobKind::DocRewrite => "doc_rewrite",
            JobKind::DocSummarize => "doc_summarize",
            JobKind::SheetTransform => "sheet_transform",
            JobKind::CanvasCluster => "canvas_cluster",
            JobKind::AsrTranscribe => "asr_transcribe",
            JobKind::WorkflowRun => "workflow_run",
            JobKind::ModelRun => "model_run",
            JobKind::MicroTaskExecution => "micro_task_execution",
            JobKind::SpecRouter => "spec_router",
            JobKind::DebugBundleExport => "debug_bundle_export",
            JobKind::TerminalExec => "terminal_exec",
            JobKind::DocIngest => "doc_ingest",
            JobKind::LoomAutoTag => "loom_auto_tag",
            JobKind::LoomAutoCaption => "loom_auto_caption",
            JobKind::LoomBatchLink => "loom_batch_link",
            JobKind::DistillationEval => "distillation_eval",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // DG-JOB-03: the legacy alias is read, and written back canonically.
        if s == "term_exec" {
            return Ok(JobKind::TerminalExec);
        }
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownValue { what: "job kind", value: s.to_owned() })
    }
}

/// The profile and protocol a plain workflow run is created with.
pub const WORKFLOW_RUN_PROFILE: &str = "workflow_run_v1";
/// The micro-task executor's profile and protocol id (DG-JOB-06).
pub const MICRO_TASK_PROFILE: &str = "micro_task_executor_v1";

/// The job identity a run carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobContract {
    /// What kind of job.
    pub job_kind: JobKind,
    /// The job profile.
    pub profile_id: String,
    /// The governing protocol.
    pub protocol_id: String,
}

impl JobContract {
    /// The contract of an ordinary workflow run.
    pub fn workflow_run() -> JobContract {
        JobContract {
            job_kind: JobKind::WorkflowRun,
            profile_id: WORKFLOW_RUN_PROFILE.to_owned(),
            protocol_id: WORKFLOW_RUN_PROFILE.to_owned(),
        }
    }
}

/// A contract that breaks DG-JOB-06.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job contract violation (DG-JOB-06): job_kind `{job_kind}` with profile_id `{profile_id}` and protocol_id `{protocol_id}`: {reason}"
)]
pub struct ContractViolation {
    /// The job kind given.
    pub job_kind: JobKind,
    /// The profile given.
    pub profile_id: String,
    /// The protocol given.
    pub protocol_id: String,
    /// Which rule it broke.
    pub reason: &'static str,
}

/// DG-JOB-06/07: checked when a job is created and again at dispatch.
pub fn check_contract(c: &JobContract) -> Result<(), ContractViolation> {
    let mt_profile = c.profile_id == MICRO_TASK_PROFILE;
    let mt_protocol = c.protocol_id == MICRO_TASK_PROFILE;
    let reason = if c.job_kind == JobKind::MicroTaskExecution && !(mt_profile && mt_protocol) {
        Some("micro_task_execution requires profile_id and protocol_id `micro_task_executor_v1`")
    } else if (mt_profile || mt_protocol) && c.job_kind != JobKind::MicroTaskExecution {
        Some("`micro_task_executor_v1` is reserved for job_kind micro_task_execution")
    } else if c.profile_id.trim().is_empty() || c.protocol_id.trim().is_empty() {
        Some("profile_id and protocol_id must not be empty")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ContractViolation {
            job_kind: c.job_kind,
            profile_id: c.profile_id.clone(),
            protocol_id: c.protocol_id.clone(),
            reason,
        }),
    }
}

/// DG-JOB-06/07 for a job about to be created or dispatched: the contract itself, and what runs
/// must match it: a `micro_task_execution` job is exactly one `micro_tasks` step, so the
/// micro-task profile can never label other work.
pub fn check_job(c: &JobContract, wf: &crate::workflow::Workflow) -> Result<(), ContractViolation> {
    check_contract(c)?;
    let one_micro_tasks_step =
        matches!(wf.steps.as_slice(), [step] if matches!(step.kind, crate::workflow::StepKind::MicroTasks(_)));
    if c.job_kind == JobKind::MicroTaskExecution && !one_micro_tasks_step {
        return Err(ContractViolation {
            job_kind: c.job_kind,
            profile_id: c.profile_id.clone(),
            protocol_id: c.protocol_id.clone(),
            reason: "micro_task_execution runs exactly one `micro_tasks` step",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(kind: JobKind, profile: &str, protocol: &str) -> JobContract {
        JobContract { job_kind: kind, profile_id: profile.into(), protocol_id: protocol.into() }
    }

    /// DG-JOB-02/03, HSK-JOB-100.
    #[test]
    fn job_kinds_parse_strictly() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(k));
        }
        assert_eq!("term_exec".parse::<JobKind>().map(JobKind::as_str), Ok("terminal_exec"));
        assert!("bogus".parse::<JobKind>().is_err());
    }

    /// DG-JOB-06: the three mismatch combinations are refused.
    #[test]
    fn contract_mismatches_are_refused() {
        assert!(check_contract(&JobContract::workflow_run()).is_ok());
        assert!(check_contract(&contract(JobKind::MicroTaskExecution, MICRO_TASK_PROFILE, MICRO_TASK_PROFILE)).is_ok());
        for bad in [
            contract(JobKind::MicroTaskExecution, "default", MICRO_TASK_PROFILE),
            contract(JobKind::MicroTaskExecution, MICRO_TASK_PROFILE, "x"),
            contract(JobKind::WorkflowRun, MICRO_TASK_PROFILE, MICRO_TASK_PROFILE),
            contract(JobKind::WorkflowRun, WORKFLOW_RUN_PROFILE, MICRO_TASK_PROFILE),
            contract(JobKind::WorkflowRun, "", "x"),
        ] {
            assert!(check_contract(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_micro_task_job_runs_exactly_one_micro_tasks_step() {
        let mt = contract(JobKind::MicroTaskExecution, MICRO_TASK_PROFILE, MICRO_TASK_PROFILE);
        let one = crate::workflow::parse("id: m\nversion: 1\nsteps:\n  - {id: s, type: micro_tasks, packet: p.yaml}\n")
            .unwrap();
        let shell =
            crate::workflow::parse("id: m\nversion: 1\nsteps:\n  - {id: s, type: shell, run: 'true'}\n").unwrap();
        assert_eq!(check_job(&mt, &one), Ok(()));
        assert_eq!(check_job(&JobContract::workflow_run(), &one), Ok(()));
        assert!(check_job(&mt, &shell).unwrap_err().to_string().contains("exactly one `micro_tasks` step"));
        let broken = contract(JobKind::MicroTaskExecution, "default", MICRO_TASK_PROFILE);
        assert!(check_job(&broken, &one).is_err(), "the contract itself is checked too");
    }
}
