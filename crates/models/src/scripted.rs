//! Answers replayed from a YAML file keyed by step and attempt; always labelled `scripted`.
//!
//! ```yaml
//! plan:            # step id
//!   1: |           # attempt number
//!     [workflow_result]{"outputs": {"plan": "..."}}[/workflow_result]
//!   default: ...   # any other attempt
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use tokio_util::sync::CancellationToken;
use yaml_rust2::{Yaml, YamlLoader};

use crate::{BoxFuture, ChatRequest, ChatResponse, Error, ModelClient, Result, tokens};

/// A provider that replays a script.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedClient {
    source: String,
    answers: BTreeMap<String, BTreeMap<String, String>>,
}

impl ScriptedClient {
    /// Reads a script file.
    pub fn from_file(path: &Path) -> Result<ScriptedClient> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read script {}: {e}", path.display())))?;
        ScriptedClient::parse(&path.display().to_string(), &text)
    }

    /// Reads a script from text; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<ScriptedClient> {
        let bad = |why: String| Error::Config(format!("script {source}: {why}"));
        let docs = YamlLoader::load_from_str(text).map_err(|e| bad(e.to_string()))?;
        let Some(Yaml::Hash(steps)) = docs.into_iter().next() else {
            return Err(bad("expected a mapping of step ids to answers".into()));
        };
        let mut answers = BTreeMap::new();
        for (step, by_attempt) in steps {
            let step = step.as_str().ok_or_else(|| bad("step ids must be strings".into()))?.to_owned();
            let Yaml::Hash(by_attempt) = by_attempt else {
                return Err(bad(format!("step `{step}`: expected a mapping of attempt numbers to answers")));
            };
            let mut list = BTreeMap::new();
            for (k, v) in by_attempt {
                let key = match k {
                    Yaml::Integer(n) => n.to_string(),
                    Yaml::String(s) if s == "default" => s,
                    other => {
                        return Err(bad(format!("step `{step}`: `{other:?}` is not an attempt number or `default`")));
                    }
                };
                let answer =
                    v.as_str().ok_or_else(|| bad(format!("step `{step}` attempt {key}: the answer must be text")))?;
                list.insert(key, answer.to_owned());
            }
            answers.insert(step, list);
        }
        Ok(ScriptedClient { source: source.to_owned(), answers })
    }
}

impl ModelClient for ScriptedClient {
    fn provider(&self) -> &str {
        "scripted"
    }

    fn chat<'a>(&'a self, req: &'a ChatRequest, _cancel: &'a CancellationToken) -> BoxFuture<'a, Result<ChatResponse>> {
        Box::pin(async move {
            let step = self.answers.get(&req.step_id);
            let answer =
                step.and_then(|s| s.get(&req.attempt.to_string()).or_else(|| s.get("default"))).ok_or_else(|| {
                    Error::Config(format!(
                        "script {} has no answer for step `{}` attempt {}",
                        self.source, req.step_id, req.attempt
                    ))
                })?;
            let (usage, _) = tokens::usage_without_server(&req.model, &req.messages, answer);
            Ok(ChatResponse {
                content: answer.clone(),
                usage,
                model: req.model.clone(),
                provider: "scripted".into(),
                raw: answer.clone(),
                requests: 0,
                warning: Some(format!("scripted answer from {}", self.source)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_keyed_by_step_and_attempt() {
        let s = ScriptedClient::parse("t.yaml", "review:\n  1: reject it\n  default: approve\nplan:\n  1: a plan\n")
            .unwrap();
        let ask = |step: &str, attempt| ChatRequest {
            model: "m".into(),
            messages: vec![],
            options: Default::default(),
            step_id: step.into(),
            attempt,
            idempotency_key: "k".into(),
        };
        let c = CancellationToken::new();
        assert_eq!(s.chat(&ask("review", 1), &c).await.unwrap().content, "reject it");
        assert_eq!(s.chat(&ask("review", 7), &c).await.unwrap().content, "approve");
        assert_eq!(s.chat(&ask("plan", 1), &c).await.unwrap().provider, "scripted");
        let err = s.chat(&ask("plan", 2), &c).await.unwrap_err();
        assert_eq!(err.to_string(), "script t.yaml has no answer for step `plan` attempt 2");
        assert!(ScriptedClient::parse("x", "plan: [1]").is_err());
    }
}
