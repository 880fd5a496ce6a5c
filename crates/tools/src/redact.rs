//! Secret redaction (TERM-LOG-002): what reaches logs, events and the store never holds a secret.
//!
//! Common token shapes are matched by pattern; values the configuration
//! marks secret are matched exactly. A match becomes `***REDACTED***`; for
//! `key=value` pairs and bearer tokens the key stays, so a reader still sees
//! what was there.

use std::borrow::Cow;

use regex::Regex;

/// What a secret is replaced with.
pub const REDACTED: &str = "***REDACTED***";

/// Finds secrets in text and replaces them.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Patterns whose whole match is secret.
    whole: Vec<Regex>,
    /// Patterns whose last group is the secret value.
    valued: Vec<Regex>,
    /// Exact values marked secret by configuration.
    values: Vec<String>,
    /// Environment and JSON keys whose values are secret whole.
    secret_name: Option<Regex>,
}

const WHOLE: &[&str] = &[
    r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"\bAIza[0-9A-Za-z_\-]{35}\b",
    r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}",
    r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
];

const VALUED: &[&str] = &[
    r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=\-]{8,})",
    r#"(?i)(\b[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|credential)[A-Za-z0-9_.\-]*["']?\s*[=:]\s*)("[^"\n]*"|'[^'\n]*'|[^\s"',;&|]+)"#,
];

const SECRET_NAME: &str = r"(?i)(secret|token|passw|api_?key|access_?key|private_?key|credential)";

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(Vec::new())
    }
}

impl Redactor {
    /// A redactor that also hides these exact values (shorter than 4 characters are ignored).
    pub fn new(secret_values: Vec<String>) -> Redactor {
        // The patterns are constants checked by the tests below.
        let compile = |list: &[&str]| list.iter().filter_map(|p| Regex::new(p).ok()).collect::<Vec<_>>();
        let mut values: Vec<String> = secret_values.into_iter().filter(|v| v.len() >= 4).collect();
        // Longest first, so a secret that contains another is hidden whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { whole: compile(WHOLE), valued: compile(VALUED), values, secret_name: Regex::new(SECRET_NAME).ok() }
    }

    /// This redactor, also hiding `value` (an API key read at run time, say).
    pub fn with_secret(mut self, value: String) -> Redactor {
        if value.len() >= 4 && !self.values.contains(&value) {
            self.values.push(value);
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
        self
    }

    fn is_secret_name(&self, name: &str) -> bool {
        self.secret_name.as_ref().is_some_and(|re| re.is_match(name))
    }

    /// The text with every secret replaced; and whether anything was.
    pub fn redact(&self, text: &str) -> (String, bool) {
        let mut out: Cow<'_, str> = Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), REDACTED));
            }
        }
        for re in &self.whole {
            if let Cow::Owned(s) = re.replace_all(&out, REDACTED) {
                out = Cow::Owned(s);
            }
        }
        for re in &self.valued {
            if let Cow::Owned(s) = re.replace_all(&out, |c: &regex::Captures<'_>| format!("{}{REDACTED}", &c[1])) {
                out = Cow::Owned(s);
            }
        }
        let changed = out != text;
        (out.into_owned(), changed)
    }

    /// Bytes as text (invalid UTF-8 replaced) with secrets redacted.
    pub fn redact_bytes(&self, bytes: &[u8]) -> (String, bool) {
        self.redact(&String::from_utf8_lossy(bytes))
    }

    /// Every string inside a JSON value, redacted.
    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.redact(s).0),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.redact_json(v)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(_) if self.is_secret_name(k) => Value::String(REDACTED.into()),
                            other => self.redact_json(other),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for p in WHOLE.iter().chain(VALUED).chain([&SECRET_NAME]) {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
    }

    /// TERM-LOG-002: common token shapes and configured values are hidden.
    #[test]
    fn secrets_are_redacted_and_keys_stay() {
        let r = Redactor::new(vec!["hunter2-configured".into()]);
        let cases = [
            ("export API_KEY=supersecret", "export API_KEY=***REDACTED***"),
            ("curl -H 'Authorization: Bearer abc.def-ghi_123'", "curl -H 'Authorization: Bearer ***REDACTED***'"),
            ("password: \"p@ss word\" next", "password: ***REDACTED*** next"),
            ("aws AKIAIOSFODNN7EXAMPLE key", "aws ***REDACTED*** key"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789AB done", "***REDACTED*** done"),
            ("key sk-proj-abcdefghijklmnopqrstuvwxyz", "key ***REDACTED***"),
            ("db uses hunter2-configured here", "db uses ***REDACTED*** here"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----\nafter",
                "***REDACTED***\nafter",
            ),
            ("nothing to see RESULT=42", "nothing to see RESULT=42"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact(input).0, want, "{input}");
        }
        assert!(!r.redact("plain text").1);
        assert!(r.redact("token=abcd").1);
    }

    #[test]
    fn non_utf8_bytes_and_json_are_redacted() {
        let r = Redactor::default();
        let mut bytes = b"bad \xff\xfe bytes password=s3cr3t".to_vec();
        bytes.push(0x80);
        let (text, changed) = r.redact_bytes(&bytes);
        assert!(changed);
        assert!(text.contains("password=***REDACTED***") && !text.contains("s3cr3t"), "{text}");
        let j = r.redact_json(&serde_json::json!({"api_key": "x", "cmd": "token=abc", "n": 1}));
        assert_eq!(j, serde_json::json!({"api_key": REDACTED, "cmd": "token=***REDACTED***", "n": 1}));
    }
}
