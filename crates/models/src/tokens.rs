//! Token counting for budgets: the server's count, else a tokenizer per model family, else an estimate that says so.

use std::sync::LazyLock;

use tiktoken_rs::CoreBPE;

use crate::{Message, Usage, UsageSource};

/// The tiktoken encoding for a model family, if one is known.
pub fn encoding_for(model: &str) -> Option<&'static str> {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-4o")
        || m.starts_with("o1")
        || m.starts_with("o3")
        || m.starts_with("o4")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-5")
    {
        Some("o200k_base")
    } else if m.starts_with("gpt-4") || m.starts_with("gpt-3.5") || m.contains("text-embedding") {
        Some("cl100k_base")
    } else {
        None
    }
}

/// The encoding's tokenizer, built once per process: building one reads a ~200k-entry vocabulary.
fn bpe(encoding: &str) -> Option<&'static CoreBPE> {
    static O200K: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::o200k_base().ok());
    static CL100K: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::cl100k_base().ok());
    match encoding {
        "o200k_base" => O200K.as_ref(),
        "cl100k_base" => CL100K.as_ref(),
        _ => None,
    }
}

/// Counts `text` for `model`: exactly with a known tokenizer, else about four characters a token.
pub fn count(model: &str, text: &str) -> (u64, UsageSource) {
    if let Some(enc) = encoding_for(model)
        && let Some(bpe) = bpe(enc)
    {
        return (bpe.encode_with_special_tokens(text).len() as u64, UsageSource::Tokenizer(enc.to_owned()));
    }
    (text.chars().count().div_ceil(4) as u64, UsageSource::Estimate)
}

/// Usage for a call whose server did not report it, with a warning when only estimated.
pub fn usage_without_server(model: &str, messages: &[Message], answer: &str) -> (Usage, Option<String>) {
    let prompt: String = messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
    let (p, source) = count(model, &prompt);
    let (c, _) = count(model, answer);
    let warning = (source == UsageSource::Estimate).then(|| {
        format!("no tokenizer is known for model `{model}` and the server reported no usage; token counts are estimates (4 characters a token)")
    });
    (Usage { prompt_tokens: p, completion_tokens: c, total_tokens: p + c, source }, warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_families_use_their_tokenizer_and_others_are_estimated() {
        assert_eq!(encoding_for("gpt-4o-mini"), Some("o200k_base"));
        assert_eq!(encoding_for("gpt-4-turbo"), Some("cl100k_base"));
        assert_eq!(encoding_for("smollm2"), None);
        let (n, src) = count("gpt-4o", "hello world");
        assert_eq!((n, src), (2, UsageSource::Tokenizer("o200k_base".into())));
        let (n, src) = count("qwen2.5-coder", "hello world");
        assert_eq!((n, src), (3, UsageSource::Estimate));
        let msgs = [crate::Message { role: crate::Role::User, content: "abcdefgh".into() }];
        let (u, warning) = usage_without_server("llama3", &msgs, "abcd");
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (2, 1, 3));
        assert!(warning.unwrap().contains("estimates"));
    }
}
