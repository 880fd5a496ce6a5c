//! The execution policy (§2.6.6.8.5.2): iteration and time limits, the escalation chain and its
//! hard gate, drop-back, pause points; defaults and ranges per DG-MT-04.

use serde::{Deserialize, Serialize};

use super::decide::DropBackStrategy;

/// Default `max_iterations_per_mt`.
pub const DEFAULT_MAX_ITERATIONS_PER_MT: u32 = 5;
/// Default `max_total_iterations`.
pub const DEFAULT_MAX_TOTAL_ITERATIONS: u32 = 100;
/// Default `max_iteration_ms`: the catalogue's per-iteration cap of 300 s (§2.6.6.8.17).
pub const DEFAULT_MAX_ITERATION_MS: u64 = 300_000;

/// Default `max_duration_ms` (one hour).
pub const DEFAULT_MAX_DURATION_MS: u64 = 3_600_000;

/// Default `max_total_tokens`. The catalogue names the field and leaves it undefined (§9); a
/// million is about 25 tasks each spending ten times the default budget of 4,096.
pub const DEFAULT_MAX_TOTAL_TOKENS: u64 = 1_000_000;

/// How LoRA adapters are chosen per level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraSelection {
    /// By task tags.
    #[default]
    AutoByTaskTags,
    /// As the level names it.
    Explicit,
    /// Never.
    None,
}

/// One rung of the escalation chain: a model behind a provider, or the hard gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevel {
    /// Position in the chain, from 0.
    pub level: u32,
    /// The model id sent to the provider (`HARD_GATE` for the gate).
    #[serde(default, alias = "model")]
    pub model_id: Option<String>,
    /// The provider kind (`openai`, `ollama`, `scripted`); the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's base URL; Ollama's local default when absent. An `openai` level that is
    /// not `cloud` must name one, so a local chain never reaches a hosted API by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// For `scripted`: the answers file, relative to the packet's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// The environment variable holding the provider's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// A LoRA adapter to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_id: Option<String>,
    /// `auto`, `alternate` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_selector: Option<String>,
    /// Sampling options passed to the provider as-is (`temperature`, `max_tokens`, `seed`, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// A hosted model: needs `cloud_escalation_allowed` and a recorded consent receipt.
    #[serde(default, alias = "cloud")]
    pub is_cloud: bool,
    /// A mandatory human pause.
    #[serde(default, alias = "hard_gate")]
    pub is_hard_gate: bool,
    /// The model's context window in tokens, as configured (MT-VAL-006 checks each task's prompt
    /// budget against the smallest in the chain); 8,192 when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
}

impl EscalationLevel {
    /// Whether reaching this level stops for a human.
    pub fn stops_for_human(&self) -> bool {
        self.is_hard_gate || self.model_id.as_deref() == Some(HARD_GATE)
    }

    /// The model id, or `HARD_GATE` for a gate without one.
    pub fn model(&self) -> &str {
        self.model_id.as_deref().unwrap_or(HARD_GATE)
    }
}

/// The model id that marks the hard gate.
pub const HARD_GATE: &str = "HARD_GATE";

/// `DEFAULT_ESCALATION_CHAIN` of spec v02.182 up to its hard gate; the cloud level after it is
/// left out because cloud escalation is off by default (DG-MT-10).
pub fn default_escalation_chain() -> Vec<EscalationLevel> {
    let level = |level: u32, model: &str, selector: &str| EscalationLevel {
        level,
        model_id: Some(model.to_owned()),
        provider: None,
        base_url: None,
        script: None,
        api_key_env: None,
        lora_id: None,
        lora_selector: Some(selector.to_owned()),
        options: serde_json::Map::new(),
        is_cloud: false,
        is_hard_gate: model == HARD_GATE,
        context_window: None,
    };
    vec![
        level(0, "qwen2.5-coder:7b", "auto"),
        level(1, "qwen2.5-coder:7b", "alternate"),
        level(2, "qwen2.5-coder:14b", "auto"),
        level(3, "qwen2.5-coder:14b", "alternate"),
        level(4, "qwen2.5-coder:32b", "none"),
        level(5, HARD_GATE, "none"),
    ]
}

/// `ExecutionPolicy`: every field optional in input, defaulted per §2.6.6.8.5.2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionPolicy {
    /// Iterations per micro-task at one level before escalating (1..=20).
    pub max_iterations_per_mt: u32,
    /// Iterations in the whole job before a hard gate (1..=500).
    pub max_total_iterations: u32,
    /// Wall-clock budget of the job before a hard gate.
    pub max_duration_ms: u64,
    /// Wall-clock cap of one model call (1,000..=3,600,000; the catalogue's 300 s by default),
    /// further cut to what is left of `max_duration_ms`: the call is cancelled when it runs out.
    pub max_iteration_ms: u64,
    /// Tokens (prompts and answers) the whole job may spend before a hard gate
    /// (1,000..=1,000,000,000).
    pub max_total_tokens: u64,
    /// The levels, ending in a hard gate.
    pub escalation_chain: Vec<EscalationLevel>,
    /// Whether cloud levels may be used at all (still with consent). Refused for now: consent
    /// receipts cannot be recorded yet.
    pub cloud_escalation_allowed: bool,
    /// When to return to a smaller model after a success.
    pub drop_back_strategy: DropBackStrategy,
    /// How LoRAs are chosen.
    pub lora_selection: LoraSelection,
    /// The adapter `lora_selection: explicit` uses (named by the catalogue, left undefined, §9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explicit_lora_id: Option<String>,
    /// What is known of the adapters the chain's servers offer, for `auto` and `alternate`
    /// selection (`lora::score`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<super::lora::LoraInfo>,
    /// Micro-task ids before which the loop pauses for a person.
    pub pause_points: Vec<String>,
    /// Whether escalations produce distillation candidates.
    pub enable_distillation: bool,
}

impl Default for ExecutionPolicy {
    fn default() -> Self {
        ExecutionPolicy {
            max_iterations_per_mt: DEFAULT_MAX_ITERATIONS_PER_MT,
            max_total_iterations: DEFAULT_MAX_TOTAL_ITERATIONS,
            max_duration_ms: DEFAULT_MAX_DURATION_MS,
            max_iteration_ms: DEFAULT_MAX_ITERATION_MS,
            max_total_tokens: DEFAULT_MAX_TOTAL_TOKENS,
            escalation_chain: default_escalation_chain(),
            cloud_escalation_allowed: false,
            drop_back_strategy: DropBackStrategy::default(),
            lora_selection: LoraSelection::default(),
            explicit_lora_id: None,
            loras: Vec::new(),
            pause_points: Vec::new(),
            enable_distillation: true,
        }
    }
}

/// A policy that cannot be used, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("execution policy: {field}: {message}")]
pub struct PolicyError {
    /// The offending field (`escalation_chain[2].level`, ...).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn policy_error(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError { field: field.into(), message: message.into() }
}

impl ExecutionPolicy {
    /// Reads a policy from JSON (a YAML document converted to JSON works the same), then checks it.
    pub fn from_json(value: &serde_json::Value) -> Result<ExecutionPolicy, PolicyError> {
        let policy: ExecutionPolicy =
            serde_json::from_value(value.clone()).map_err(|e| policy_error("(document)", e.to_string()))?;
        policy.check()?;
        Ok(policy)
    }

    /// DG-MT-04 ranges and the chain's shape: levels numbered 0, 1, 2, ... and a hard gate that
    /// every run can reach, so escalation always ends with a person.
    pub fn check(&self) -> Result<(), PolicyError> {
        // DG-MT-10: a cloud level needs a recorded consent receipt, which this version has no way
        // to record yet; refusing the switch is safer than sending code out without one.
        if self.cloud_escalation_allowed {
            return Err(policy_error(
                "cloud_escalation_allowed",
                "cloud escalation needs a recorded consent receipt, which this version cannot record yet; leave it false (cloud levels are skipped)",
            ));
        }
        if !(1..=20).contains(&self.max_iterations_per_mt) {
            return Err(policy_error(
                "max_iterations_per_mt",
                format!("{} is outside 1..=20", self.max_iterations_per_mt),
            ));
        }
        if !(1..=500).contains(&self.max_total_iterations) {
            return Err(policy_error(
                "max_total_iterations",
                format!("{} is outside 1..=500", self.max_total_iterations),
            ));
        }
        if self.max_duration_ms == 0 {
            return Err(policy_error("max_duration_ms", "must be at least 1"));
        }
        for (i, l) in self.escalation_chain.iter().enumerate() {
            if let Some(w) = l.context_window
                && !(1_024..=2_097_152).contains(&w)
            {
                return Err(policy_error(
                    format!("escalation_chain[{i}].context_window"),
                    format!("{w} is outside 1024..=2097152"),
                ));
            }
        }
        if !(1_000..=3_600_000).contains(&self.max_iteration_ms) {
            return Err(policy_error(
                "max_iteration_ms",
                format!("{} is outside 1000..=3600000", self.max_iteration_ms),
            ));
        }
        for (i, l) in self.loras.iter().enumerate() {
            if l.pass_at_1.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                return Err(policy_error(format!("loras[{i}].pass_at_1"), "must be within 0..=1"));
            }
            if l.last_trained_at.as_deref().is_some_and(|t| steward_core::Timestamp::parse_rfc3339(t).is_none()) {
                return Err(policy_error(format!("loras[{i}].last_trained_at"), "must be an RFC 3339 time"));
            }
        }
        if self.lora_selection == LoraSelection::Explicit && self.explicit_lora_id.is_none() {
            return Err(policy_error("explicit_lora_id", "`lora_selection: explicit` needs the adapter to use"));
        }
        if !(1_000..=1_000_000_000).contains(&self.max_total_tokens) {
            return Err(policy_error(
                "max_total_tokens",
                format!("{} is outside 1000..=1000000000", self.max_total_tokens),
            ));
        }
        if self.escalation_chain.is_empty() {
            return Err(policy_error("escalation_chain", "must have at least one level and end in a hard gate"));
        }
        for (i, level) in self.escalation_chain.iter().enumerate() {
            let field = format!("escalation_chain[{i}]");
            if level.level as usize != i {
                return Err(policy_error(format!("{field}.level"), format!("is {}, expected {i}", level.level)));
            }
            if !level.stops_for_human() && level.model_id.as_deref().is_none_or(|m| m.trim().is_empty()) {
                return Err(policy_error(format!("{field}.model"), "a model level needs a model id"));
            }
            if let Some(p) = &level.provider
                && !["openai", "ollama", "scripted"].contains(&p.as_str())
            {
                return Err(policy_error(
                    format!("{field}.provider"),
                    format!("`{p}` is not a provider (openai, ollama, scripted)"),
                ));
            }
            let provider = level.provider.as_deref().unwrap_or("ollama");
            if !level.stops_for_human() && provider == "scripted" && level.script.is_none() {
                return Err(policy_error(
                    format!("{field}.script"),
                    "a scripted level needs `script` (an answers file)",
                ));
            }
            if !level.stops_for_human() && provider == "openai" && level.base_url.is_none() && !level.is_cloud {
                return Err(policy_error(
                    format!("{field}.base_url"),
                    "a local openai level needs `base_url` (a hosted API is a `cloud: true` level)",
                ));
            }
        }
        // An escalation that asks the same model the same way again is a retry under another
        // name: it spends the budget of a rung and teaches nothing.
        for (i, pair) in self.escalation_chain.windows(2).enumerate() {
            let (a, b) = (&pair[0], &pair[1]);
            let same = |x: &EscalationLevel, y: &EscalationLevel| {
                (
                    x.provider.as_deref().unwrap_or("ollama"),
                    &x.base_url,
                    &x.model_id,
                    &x.lora_id,
                    &x.lora_selector,
                    &x.options,
                    &x.script,
                ) == (
                    y.provider.as_deref().unwrap_or("ollama"),
                    &y.base_url,
                    &y.model_id,
                    &y.lora_id,
                    &y.lora_selector,
                    &y.options,
                    &y.script,
                )
            };
            if !a.stops_for_human() && !b.stops_for_human() && same(a, b) {
                return Err(policy_error(
                    format!("escalation_chain[{}]", i + 1),
                    format!(
                        "levels {} and {} would send the same request to the same model `{}`; give level {} another model, a LoRA (`lora_id`, `lora_selector`) or other options",
                        i,
                        i + 1,
                        a.model(),
                        i + 1
                    ),
                ));
            }
        }
        let first = &self.escalation_chain[0];
        if first.stops_for_human() || first.is_cloud {
            return Err(policy_error("escalation_chain[0]", "the first level must be a local model"));
        }
        if !self.escalation_chain.iter().any(|l| l.stops_for_human() && !l.is_cloud) {
            return Err(policy_error("escalation_chain", "must contain a (local) HARD_GATE level"));
        }
        Ok(())
    }

    /// The highest level a task may run a model at before the hard gate stops it: the last
    /// model level before the first gate, skipping cloud levels when they are not allowed.
    pub fn max_model_level(&self) -> u32 {
        let mut top = 0;
        for l in &self.escalation_chain {
            if l.stops_for_human() {
                break;
            }
            if !l.is_cloud || self.cloud_escalation_allowed {
                top = l.level;
            }
        }
        top
    }

    /// The smallest context window among the levels a task may run a model at (configured, else
    /// [`crate::validate::DEFAULT_MODEL_CONTEXT_TOKENS`]): what every prompt budget
    /// must fit (MT-VAL-006).
    pub fn smallest_context_window(&self) -> u32 {
        self.escalation_chain
            .iter()
            .take_while(|l| !l.stops_for_human())
            .filter(|l| !l.is_cloud || self.cloud_escalation_allowed)
            .map(|l| l.context_window.unwrap_or(crate::validate::DEFAULT_MODEL_CONTEXT_TOKENS))
            .min()
            .unwrap_or(crate::validate::DEFAULT_MODEL_CONTEXT_TOKENS)
    }

    /// The level a task starts at: the chain's first.
    pub fn min_model_level(&self) -> u32 {
        self.escalation_chain.first().map_or(0, |l| l.level)
    }

    /// The level after `level`, skipping cloud levels that are not allowed; `None` when the next
    /// reachable rung is the hard gate (or the chain ends).
    pub fn next_model_level(&self, level: u32) -> Option<u32> {
        self.escalation_chain
            .iter()
            .skip(level as usize + 1)
            .take_while(|l| !l.stops_for_human())
            .find(|l| !l.is_cloud || self.cloud_escalation_allowed)
            .map(|l| l.level)
    }

    /// The level record at `level`.
    pub fn level(&self, level: u32) -> Option<&EscalationLevel> {
        self.escalation_chain.get(level as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// DG-MT-04: `{}` takes the catalogue's defaults.
    #[test]
    fn an_empty_policy_takes_the_defaults() {
        let p = ExecutionPolicy::from_json(&json!({})).unwrap();
        assert_eq!(p.max_iterations_per_mt, 5);
        assert_eq!(p.max_total_iterations, 100);
        assert_eq!(p.max_duration_ms, 3_600_000);
        assert!(!p.cloud_escalation_allowed);
        assert_eq!(p.drop_back_strategy, DropBackStrategy::Smart);
        assert_eq!(p.lora_selection, LoraSelection::AutoByTaskTags);
        assert!(p.pause_points.is_empty());
        assert!(p.enable_distillation);
        assert_eq!(p.max_model_level(), 4);
        assert_eq!(p.next_model_level(3), Some(4));
        assert_eq!(p.next_model_level(4), None);
    }

    /// DG-MT-04: out-of-range values are refused, naming the field.
    #[test]
    fn out_of_range_values_are_refused() {
        for (doc, field) in [
            (json!({"max_iterations_per_mt": 0}), "max_iterations_per_mt"),
            (json!({"max_iterations_per_mt": 21}), "max_iterations_per_mt"),
            (json!({"max_total_iterations": 501}), "max_total_iterations"),
            (json!({"max_duration_ms": 0}), "max_duration_ms"),
            (json!({"escalation_chain": []}), "escalation_chain"),
            (json!({"escalation_chain": [{"level": 0, "model": "m"}]}), "escalation_chain"),
            (
                json!({"escalation_chain": [{"level": 1, "model": "m"}, {"level": 2, "hard_gate": true}]}),
                "escalation_chain[0].level",
            ),
            (json!({"escalation_chain": [{"level": 0, "hard_gate": true}]}), "escalation_chain[0]"),
            (
                json!({"escalation_chain": [{"level": 0, "model": "m", "provider": "x"}, {"level": 1, "hard_gate": true}]}),
                "escalation_chain[0].provider",
            ),
            (
                json!({"escalation_chain": [{"level": 0, "model": "m", "provider": "scripted"}, {"level": 1, "hard_gate": true}]}),
                "escalation_chain[0].script",
            ),
            (
                json!({"escalation_chain": [{"level": 0, "model": "m", "provider": "openai"}, {"level": 1, "hard_gate": true}]}),
                "escalation_chain[0].base_url",
            ),
        ] {
            let e = ExecutionPolicy::from_json(&doc).unwrap_err();
            assert_eq!(e.field, field, "{doc}: {e}");
        }
        let e = ExecutionPolicy::from_json(&json!({"max_iterations": 3})).unwrap_err();
        assert!(e.message.contains("max_iterations"), "{e}");
    }

    /// MT-VAL-006 is checked against the smallest configured context window of the chain's
    /// model levels (8,192 where a level says nothing), not a fixed one.
    #[test]
    fn the_smallest_context_window_of_the_chain_bounds_every_prompt_budget() {
        let p = ExecutionPolicy::from_json(&json!({"escalation_chain": [
            {"level": 0, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "small", "context_window": 2048},
            {"level": 1, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "large"},
            {"level": 2, "hard_gate": true}
        ]}))
        .unwrap();
        assert_eq!(p.smallest_context_window(), 2048);
        assert_eq!(ExecutionPolicy::default().smallest_context_window(), 8192);
        let packet = crate::packet::parse(
            "wp_id: W\ndescription: d\nin_scope_paths: [a.py]\ndone_means: [x]\ntest_plan: [make test]\n",
        )
        .unwrap();
        let mts = crate::generate::generate(&packet, 2, |_| true);
        let limits = |w| crate::validate::Limits { in_scope_paths: &packet.in_scope_paths, model_context_tokens: w };
        let report = crate::validate::validate(&mts, &limits(p.smallest_context_window()));
        assert!(report.errors.iter().any(|e| e.to_string().contains("MT-VAL-006")), "{report:?}");
        let bad = json!({"escalation_chain": [{"level": 0, "model": "m", "context_window": 10}, {"level": 1, "hard_gate": true}]});
        assert_eq!(ExecutionPolicy::from_json(&bad).unwrap_err().field, "escalation_chain[0].context_window");
    }

    /// A rung that would ask the same model the same way as the one below it is refused, naming
    /// both levels; another model, a LoRA or other options make it a rung.
    #[test]
    fn a_chain_that_asks_the_same_model_twice_is_refused() {
        let chain = |second: serde_json::Value| {
            json!({"escalation_chain": [
                {"level": 0, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "small"},
                second,
                {"level": 2, "hard_gate": true}
            ]})
        };
        let same =
            chain(json!({"level": 1, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "small"}));
        let e = ExecutionPolicy::from_json(&same).unwrap_err();
        assert_eq!(e.field, "escalation_chain[1]");
        assert!(e.message.contains("levels 0 and 1 would send the same request to the same model `small`"), "{e}");
        for differs in [
            json!({"level": 1, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "large"}),
            json!({"level": 1, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "small", "lora_id": "fix-py"}),
            json!({"level": 1, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "small", "options": {"temperature": 0.7}}),
        ] {
            ExecutionPolicy::from_json(&chain(differs.clone())).unwrap_or_else(|e| panic!("{differs}: {e}"));
        }
        ExecutionPolicy::default().check().unwrap();
    }

    /// The inline chain: two levels on one server, then the gate.
    #[test]
    fn an_inline_chain_maps_levels_to_providers() {
        let p = ExecutionPolicy::from_json(&json!({"escalation_chain": [
            {"level": 0, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "small"},
            {"level": 1, "provider": "openai", "base_url": "http://127.0.0.1:8081/v1", "model": "large"},
            {"level": 2, "hard_gate": true},
        ]}))
        .unwrap();
        assert_eq!(p.level(1).map(EscalationLevel::model), Some("large"));
        assert_eq!(p.max_model_level(), 1);
        assert_eq!(p.next_model_level(0), Some(1));
        assert_eq!(p.next_model_level(1), None);
    }

    /// DG-MT-10: a cloud level is skipped unless cloud escalation is allowed.
    #[test]
    fn cloud_levels_are_skipped_unless_allowed() {
        let chain = json!([
            {"level": 0, "model": "small"},
            {"level": 1, "model": "gpt", "cloud": true},
            {"level": 2, "model": "large"},
            {"level": 3, "hard_gate": true},
        ]);
        let p = ExecutionPolicy::from_json(&json!({"escalation_chain": chain})).unwrap();
        assert_eq!(p.next_model_level(0), Some(2));
        let allowed = ExecutionPolicy { cloud_escalation_allowed: true, ..p };
        assert_eq!(allowed.next_model_level(0), Some(1));
        // Until consent receipts can be recorded, a policy may not switch cloud escalation on.
        let e = ExecutionPolicy::from_json(&json!({"escalation_chain": chain, "cloud_escalation_allowed": true}))
            .unwrap_err();
        assert_eq!(e.field, "cloud_escalation_allowed");
    }
}
