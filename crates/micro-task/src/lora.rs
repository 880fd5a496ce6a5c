//! LoRA selection (§2.6.6.8.9.2): which of the adapters a level's server offers an iteration
//! uses, scored by the task's tags against what the policy says each adapter was trained on
//! (`ComputeLoRAScore`), with ties broken by name so the choice is the same on every run.

use serde::{Deserialize, Serialize};
use steward_core::Timestamp;

use super::policy::{EscalationLevel, ExecutionPolicy, LoraSelection};

/// What the policy knows of one adapter (`loras:` in the execution policy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraInfo {
    /// The adapter's file name as its server lists it (`py-fix.gguf`; matched by file name).
    pub adapter: String,
    /// Task tags it was trained on (+1.0 each).
    pub trained_on_task_types: Vec<String>,
    /// Tags it specialises in (+0.5 each).
    pub specialization: Vec<String>,
    /// Tags it is weak on (−0.5 each).
    pub weak_on_task_types: Vec<String>,
    /// When it was last trained, RFC 3339 (+0.2 within the last 7 days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_trained_at: Option<String>,
    /// Its eval pass@1, 0..=1 (+0.3 above 0.7).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_at_1: Option<f64>,
}

// The policy check refuses a `pass_at_1` outside 0..=1 (NaN included), so equality is total.
impl Eq for LoraInfo {}

const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;

/// An adapter a level's server offers: its id there and its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// The id the server applies it by (`lora: [{id, scale}]` on llama.cpp's server).
    pub server_id: u32,
    /// Its file name.
    pub name: String,
}

/// `ComputeLoRAScore`: the adapter's fit to a task's tags at `now`.
pub fn score(info: &LoraInfo, tags: &[String], now: Timestamp) -> f64 {
    let mut s = 0.0;
    for tag in tags {
        if info.trained_on_task_types.contains(tag) {
            s += 1.0;
        }
        if info.specialization.contains(tag) {
            s += 0.5;
        }
        if info.weak_on_task_types.contains(tag) {
            s -= 0.5;
        }
    }
    let trained = info.last_trained_at.as_deref().and_then(Timestamp::parse_rfc3339);
    if trained.is_some_and(|t| now.since(t) <= WEEK_MS) {
        s += 0.2;
    }
    if info.pass_at_1.is_some_and(|p| p > 0.7) {
        s += 0.3;
    }
    s
}

/// The adapter an iteration at `level` uses, among those its server offers (`offered`), or
/// `None`: a level's own `lora_id` wins; `lora_selection: none` or a level's `lora_selector:
/// none` uses none; `explicit` uses the policy's `explicit_lora_id`; `auto` the best score;
/// `alternate` the best but `previous` (the adapter the task last used), or `previous` when there
/// is no other. An adapter the policy says nothing of scores 0. Ties go to the smaller name.
pub fn select<'a>(
    policy: &ExecutionPolicy,
    level: &EscalationLevel,
    offered: &'a [Offered],
    tags: &[String],
    previous: Option<&str>,
    now: Timestamp,
) -> Option<&'a Offered> {
    let named = |name: &str| offered.iter().find(|o| o.name == name);
    if let Some(id) = &level.lora_id {
        return named(id);
    }
    let selector = level.lora_selector.as_deref().unwrap_or("auto");
    match policy.lora_selection {
        LoraSelection::None => return None,
        LoraSelection::Explicit => return policy.explicit_lora_id.as_deref().and_then(named),
        LoraSelection::AutoByTaskTags if selector == "none" => return None,
        LoraSelection::AutoByTaskTags => {}
    }
    let scored = |o: &Offered| {
        let info = policy.loras.iter().find(|l| l.adapter == o.name).cloned().unwrap_or_default();
        score(&info, tags, now)
    };
    let best = |skip: Option<&str>| {
        let mut ranked: Vec<(&Offered, f64)> =
            offered.iter().filter(|o| Some(o.name.as_str()) != skip).map(|o| (o, scored(o))).collect();
        ranked.sort_by(|(a, sa), (b, sb)| sb.total_cmp(sa).then_with(|| a.name.cmp(&b.name)));
        ranked.first().map(|(o, _)| *o)
    };
    if selector == "alternate" {
        return best(previous).or_else(|| previous.and_then(named));
    }
    best(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp(1_800_000_000_000);

    fn offered() -> Vec<Offered> {
        ["general.gguf", "py-fix.gguf", "rust.gguf"]
            .iter()
            .enumerate()
            .map(|(i, n)| Offered { server_id: i as u32, name: (*n).to_owned() })
            .collect()
    }

    fn policy() -> ExecutionPolicy {
        ExecutionPolicy {
            loras: vec![
                LoraInfo {
                    adapter: "py-fix.gguf".into(),
                    trained_on_task_types: vec!["python".into()],
                    ..LoraInfo::default()
                },
                LoraInfo {
                    adapter: "rust.gguf".into(),
                    trained_on_task_types: vec!["rust".into()],
                    ..LoraInfo::default()
                },
            ],
            ..ExecutionPolicy::default()
        }
    }

    fn level(selector: &str) -> EscalationLevel {
        EscalationLevel {
            lora_selector: Some(selector.into()),
            ..ExecutionPolicy::default().escalation_chain[0].clone()
        }
    }

    #[test]
    fn scores_follow_the_catalogue() {
        let info = LoraInfo {
            adapter: "a".into(),
            trained_on_task_types: vec!["python".into()],
            specialization: vec!["python".into()],
            weak_on_task_types: vec!["async".into()],
            last_trained_at: Some("2026-11-30T00:00:00Z".into()),
            pass_at_1: Some(0.8),
        };
        let now = Timestamp::parse_rfc3339("2026-12-02T00:00:00Z").unwrap();
        let s = score(&info, &["python".into(), "async".into()], now);
        assert!((s - (1.0 + 0.5 - 0.5 + 0.2 + 0.3)).abs() < 1e-9, "{s}");
        let later = Timestamp::parse_rfc3339("2026-12-09T00:00:01Z").unwrap();
        assert!((score(&info, &["python".into()], later) - 1.8).abs() < 1e-9, "a week on, no longer recent");
    }

    #[test]
    fn auto_takes_the_best_fit_and_alternate_the_next() {
        let (p, o, tags) = (policy(), offered(), vec!["python".to_owned()]);
        let auto = select(&p, &level("auto"), &o, &tags, None, T).unwrap();
        assert_eq!(auto.name, "py-fix.gguf");
        let alt = select(&p, &level("alternate"), &o, &tags, Some("py-fix.gguf"), T).unwrap();
        assert_eq!(alt.name, "general.gguf", "a tie at 0 goes to the smaller name");
        assert_eq!(select(&p, &level("none"), &o, &tags, None, T), None);
        assert_eq!(select(&p, &level("auto"), &[], &tags, None, T), None, "a server with no adapters");
        let only = vec![Offered { server_id: 0, name: "py-fix.gguf".into() }];
        assert_eq!(select(&p, &level("alternate"), &only, &tags, Some("py-fix.gguf"), T).unwrap().name, "py-fix.gguf");
    }

    #[test]
    fn a_level_lora_and_the_explicit_policy_win() {
        let (o, tags) = (offered(), vec!["python".to_owned()]);
        let fixed = EscalationLevel { lora_id: Some("rust.gguf".into()), ..level("auto") };
        assert_eq!(select(&policy(), &fixed, &o, &tags, None, T).unwrap().server_id, 2);
        let explicit = ExecutionPolicy {
            lora_selection: LoraSelection::Explicit,
            explicit_lora_id: Some("general.gguf".into()),
            ..policy()
        };
        assert_eq!(select(&explicit, &level("auto"), &o, &tags, None, T).unwrap().name, "general.gguf");
        let none = ExecutionPolicy { lora_selection: LoraSelection::None, ..policy() };
        assert_eq!(select(&none, &level("auto"), &o, &tags, None, T), None);
    }
}
