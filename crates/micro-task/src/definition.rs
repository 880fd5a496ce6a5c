//! The micro-task definition schema (§2.6.6.8.6.1): what one generated task may read, write,
//! run and must achieve.

use serde::{Deserialize, Serialize};

/// Which files a micro-task reads, modifies and creates (relative paths).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileAccess {
    /// Files given to the model as context (at most 10).
    pub read: Vec<String>,
    /// Existing files the model may rewrite (at most 5).
    pub modify: Vec<String>,
    /// New files the model may create (at most 3).
    pub create: Vec<String>,
}

/// How a verify command's result is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Exit status 0 and not timed out. Spelled `exit_0` as the catalogue and the README write
    /// it (serde's own snake case would be `exit0`, which documents written before are read in).
    #[serde(rename = "exit_0", alias = "exit0")]
    Exit0,
    /// Exit status other than 0, or timed out.
    ExitNonzero,
    /// Stdout contains `pattern`.
    Contains,
    /// Stdout does not contain `pattern`.
    NotContains,
}

impl Expect {
    /// The spelling used in definitions and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Exit0 => "exit_0",
            Expect::ExitNonzero => "exit_nonzero",
            Expect::Contains => "contains",
            Expect::NotContains => "not_contains",
        }
    }

    /// Whether a finished command passed: the pass semantics of §2.6.6.8.10.
    pub fn passed(self, exit_code: Option<i32>, timed_out: bool, stdout: &str, pattern: Option<&str>) -> bool {
        let ok_exit = exit_code == Some(0) && !timed_out;
        match self {
            Expect::Exit0 => ok_exit,
            Expect::ExitNonzero => !ok_exit,
            Expect::Contains => !timed_out && pattern.is_some_and(|p| stdout.contains(p)),
            Expect::NotContains => !timed_out && pattern.is_some_and(|p| !stdout.contains(p)),
        }
    }
}

/// The default verify timeout (ms).
pub const DEFAULT_VERIFY_TIMEOUT_MS: u64 = 30_000;
/// The longest verify timeout allowed (ms).
pub const MAX_VERIFY_TIMEOUT_MS: u64 = 300_000;

/// One verification command (`VerificationSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySpec {
    /// The shell command, run through the tool bus as `engine.shell`/`exec`.
    pub command: String,
    /// How the result is judged.
    pub expect: Expect,
    /// The text `contains`/`not_contains` look for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Wall-clock limit in ms (1000..=300000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Whether a failure fails the validation.
    #[serde(default = "default_true")]
    pub blocking: bool,
}

fn default_timeout() -> u64 {
    DEFAULT_VERIFY_TIMEOUT_MS
}

fn default_true() -> bool {
    true
}

/// How a done criterion is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// A verify spec decides it.
    Automated,
    /// The model must cite file:line evidence.
    EvidenceRequired,
}

/// One thing that must hold when the task is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneCriterion {
    /// What must hold.
    pub description: String,
    /// How it is established.
    pub verification: Verification,
    /// Index into the task's `verify` list for automated criteria.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_ref: Option<usize>,
}

/// Where a micro-task is meant to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionTier {
    /// A small local model.
    LocalSmall,
    /// A large local model.
    LocalLarge,
    /// A hosted model (needs consent).
    Cloud,
    /// A person.
    HumanReview,
}

impl ExecutionTier {
    /// The spelling used in definitions and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionTier::LocalSmall => "local_small",
            ExecutionTier::LocalLarge => "local_large",
            ExecutionTier::Cloud => "cloud",
            ExecutionTier::HumanReview => "human_review",
        }
    }
}

/// What a micro-task produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutput {
    /// Changes to files.
    Patch,
    /// A new artifact.
    Artifact,
    /// A structured answer.
    StructuredAnswer,
    /// Material for a human decision.
    DecisionSupport,
}

/// How risky the task's changes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

/// One generated micro-task (`MicroTaskDefinition`, §2.6.6.8.6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicroTaskDefinition {
    /// `MT-NNN`.
    pub mt_id: String,
    /// Short name (≤ 100 chars).
    pub name: String,
    /// What the task covers (≤ 500 chars).
    pub scope: String,
    /// Files read, modified and created.
    pub files: FileAccess,
    /// Steps in execution order (1..=10, each ≤ 200 chars).
    pub actions: Vec<String>,
    /// Verification commands (1..=5).
    pub verify: Vec<VerifySpec>,
    /// Done criteria (1..=8).
    pub done: Vec<DoneCriterion>,
    /// Tasks that must complete first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Prompt token budget (512..=8192).
    pub token_budget: u32,
    /// Where it is meant to run.
    pub execution_tier: ExecutionTier,
    /// Tools the model may use; empty means read-only context only.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Retries allowed (0..=5).
    pub retry_budget: u32,
    /// Where it escalates when the chain is exhausted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_target: Option<String>,
    /// What it produces.
    pub expected_output: Option<ExpectedOutput>,
    /// Tags used for LoRA selection.
    #[serde(default)]
    pub task_tags: Vec<String>,
    /// Risk.
    pub risk_level: RiskLevel,
    /// Free notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl MicroTaskDefinition {
    /// The files the model may write: `files.modify ∪ files.create`.
    pub fn writable(&self) -> impl Iterator<Item = &String> {
        self.files.modify.iter().chain(&self.files.create)
    }

    /// Whether this task is simpler than `other` (ShouldDropBack's "remaining micro-tasks are
    /// simpler than the escalated one", §2.6.6.8.7.3): it writes no more files, risks no more
    /// and needs no larger prompt budget, and is smaller in at least one of them.
    pub fn simpler_than(&self, other: &MicroTaskDefinition) -> bool {
        let size = |m: &MicroTaskDefinition| (m.writable().count(), m.risk_level as u8, m.token_budget);
        let (a, b) = (size(self), size(other));
        a.0 <= b.0 && a.1 <= b.1 && a.2 <= b.2 && a != b
    }

    /// The files given as context: `files.read ∪ files.modify`, without duplicates, in order.
    pub fn context_files(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in self.files.read.iter().chain(&self.files.modify) {
            if !out.contains(&f.as_str()) {
                out.push(f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ShouldDropBack's "simpler": no more files, risk or budget, and less of one.
    #[test]
    fn a_task_is_simpler_when_it_is_smaller_and_no_larger() {
        let packet = crate::packet::parse(
            "wp_id: W\ndescription: d\nin_scope_paths: [a.py, b.py, c.py, d.py, e.py, f.py]\ndone_means: [x]\ntest_plan: [make test]\n",
        )
        .unwrap();
        let mts = crate::generate::generate(&packet, 2, |_| true);
        assert!(mts.len() >= 2, "{}", mts.len());
        let (big, small) = (&mts[0], mts.last().unwrap());
        assert!(big.writable().count() > small.writable().count());
        assert!(small.simpler_than(big));
        assert!(!big.simpler_than(small));
        assert!(!big.simpler_than(big), "not simpler than itself");
    }

    /// §2.6.6.8.10 pass semantics, timeouts included.
    #[test]
    fn expectations_judge_exit_timeout_and_stdout() {
        assert!(Expect::Exit0.passed(Some(0), false, "", None));
        assert!(!Expect::Exit0.passed(Some(0), true, "", None));
        assert!(!Expect::Exit0.passed(Some(1), false, "", None));
        assert!(Expect::ExitNonzero.passed(Some(2), false, "", None));
        assert!(Expect::ExitNonzero.passed(None, true, "", None));
        assert!(Expect::Contains.passed(Some(1), false, "3 passed", Some("passed")));
        assert!(!Expect::Contains.passed(Some(0), false, "3 passed", None));
        assert!(Expect::NotContains.passed(Some(0), false, "ok", Some("FAILED")));
        assert!(!Expect::NotContains.passed(Some(0), false, "FAILED", Some("FAILED")));
    }
}
