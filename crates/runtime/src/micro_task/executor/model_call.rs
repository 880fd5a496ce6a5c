//! One model call of an iteration: the request with its caps, the answer saved before anything
//! is done with it, its `llm_inference` event; and the record of a move to another model.

use super::*;

impl Executor<'_> {
    /// Calls the model and saves its answer in the document `save_to` before anything else (the
    /// event included), so a crash after the call never costs a second one. A model error is an
    /// iteration outcome, not an executor error.
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn ask(
        &self,
        level: &EscalationLevel,
        model_id: &str,
        prompt: &str,
        mt: &MicroTaskDefinition,
        n: u32,
        key: &str,
        save_to: &str,
        time_cap: std::time::Duration,
    ) -> Result<Result<(String, (u64, u64)), String>> {
        let model_error =
            |e: &dyn std::fmt::Display| format!("model_error: {}", self.redactor.redact(&e.to_string()).0);
        let client = match (self.models)(level) {
            Ok(c) => c,
            Err(e) => return Ok(Err(model_error(&e))),
        };
        // Every request is capped: an answer as long as the task's prompt budget, unless the
        // level says otherwise (§2.6.6.8.17: an iteration spends at most twice the budget).
        let mut options = level.options.clone();
        let cap_key = match client.provider() {
            "openai" => Some("max_tokens"),
            "ollama" => Some("num_predict"),
            _ => None,
        };
        if let Some(k) = cap_key.filter(|k| !options.contains_key(*k) && !options.contains_key("max_tokens")) {
            options.insert(k.to_owned(), json!(mt.token_budget));
        }
        let req = ChatRequest {
            model: model_id.to_owned(),
            messages: vec![Message { role: Role::User, content: prompt.to_owned() }],
            options,
            // A scripted provider answers by task and iteration (`MT-001: {1: ...}`).
            step_id: mt.mt_id.clone(),
            attempt: n,
            idempotency_key: key.to_owned(),
        };
        let started = std::time::Instant::now();
        // The iteration's time cap cancels the call (the request is dropped with its future).
        let answer = match tokio::time::timeout(time_cap, client.chat(&req, self.halt.token())).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => {
                Err(format!("model_timeout: no answer within the iteration's {:.1}s cap", time_cap.as_secs_f64()))
            }
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Ok(r) = &answer {
            // Its usage first: an answer replayed after a crash reports what it cost.
            let usage = json!({"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens});
            self.write_json(&step_doc(key, "usage.json"), &usage).await?;
            self.persist(save_to, r.content.as_bytes()).await?;
        }
        if answer.is_err() {
            // A call cut short by an interrupt is no answer to record; the iteration resumes.
            self.check_interrupt()?;
        }
        let call = Inference {
            trace_id: self.trace_id,
            model_id,
            provider: client.provider(),
            prompt_hash: hash(prompt.as_bytes()),
            response_hash: answer.as_ref().ok().map(|r| hash(r.content.as_bytes())),
            latency_ms,
            scripted: client.provider() == "scripted",
        };
        let why = answer.as_ref().err().cloned().unwrap_or_default();
        let answered = answer.as_ref().map_err(|_| why.as_str());
        self.emit(vec![inference_event(call, answered, self.redactor)]).await?;
        Ok(answer.map(|r| (r.content, (r.usage.prompt_tokens, r.usage.completion_tokens))).map_err(|e| model_error(&e)))
    }

    /// Records a move to another model (FR-EVT-MODEL-001/002, DG-MT-09): nothing when the two
    /// levels use the same model.
    pub(super) async fn model_switch(
        &self,
        policy: &ExecutionPolicy,
        mt_id: Option<&str>,
        from: u32,
        to: u32,
        reason: &str,
    ) -> Result<()> {
        let model = |l: u32| policy.level(l).map(EscalationLevel::model).unwrap_or_default().to_owned();
        let (from_model, to_model) = (model(from), model(to));
        if from_model == to_model || policy.level(to).is_none_or(EscalationLevel::stops_for_human) {
            return Ok(());
        }
        let body = json!({
            "wp_id": self.wp(), "mt_id": mt_id, "from_model": from_model, "to_model": to_model,
            "from_level": from, "to_level": to, "reason": reason,
        });
        let events =
            ["model_swap_requested", "model_swap_completed"].map(|t| Payload::recorded(t, body.clone())).to_vec();
        self.emit(events).await
    }
}
