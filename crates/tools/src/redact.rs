//! Secret redaction (TERM-LOG-002): what reaches logs, events and the store never holds a secret.
//!
//! Three kinds of knowledge, applied in this order:
//! - **values** marked secret (configured `secret_env` variables, secret inputs, API keys,
//!   secret-named environment variables), matched exactly, also in their base64 (standard and
//!   URL-safe, at any alignment inside a longer encoding) and hex forms and when a line break
//!   splits them;
//! - **token shapes** (`RULES`): provider prefixes (`ghp_`, `sk_live_`, `glpat-`, `hf_`, `npm_`,
//!   `xoxb-`, `AKIA`...), private key blocks, and `key=value`-like contexts (URLs with a
//!   password, `Authorization:` headers, `--password VALUE`, `AccountKey=`); in a context only
//!   the value is hidden, so a reader still sees what was there;
//! - **names**: JSON keys and environment variable names that say secret (`*_TOKEN`, `*_KEY`,
//!   ...) have their whole value hidden.
//!
//! A match becomes `***REDACTED***`. The token-shape rules are compiled once per process; the
//! values are compiled into one regex the first time a redactor with new values is used, so
//! each call is one linear pass per rule, whatever the number of secrets.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, OnceLock};

use regex::{Captures, Regex, RegexBuilder};

/// What a secret is replaced with.
pub const REDACTED: &str = "***REDACTED***";

/// Configured values shorter than this are ignored: they would hide ordinary words.
const MIN_VALUE: usize = 4;
/// Values of secret-named environment variables shorter than this are ignored (`1`, `true`).
const MIN_ENV_VALUE: usize = 6;
/// Values at least this long are also matched in their base64 and hex forms.
const MIN_ENCODED: usize = 6;
/// Values longer than this are matched only as written: their split and encoded forms would
/// make the matcher large, and long secrets (key files) have shapes of their own.
const MAX_VARIANT: usize = 256;
/// Between any two characters of a value, a line break may have split it.
const BREAK: &str = r"(?:\r?\n)?";

/// One token shape.
struct Rule {
    /// What it finds, for validation warnings: "a GitHub token".
    what: &'static str,
    /// With a group named `s`, only that group is secret; otherwise the whole match.
    re: Regex,
    /// Whether a candidate secret really is one (a look-alike is kept).
    accept: Accept,
}

/// Whether a candidate secret really is one.
type Accept = fn(&str) -> bool;

/// The token shapes, as `(what, pattern, accept)`. Order matters: a rule that needs context
/// another rule would destroy runs first (the AWS secret next to its key id before the key
/// id; `Authorization:` before the bare bearer rule).
const RULE_SOURCES: &[(&str, &str, Accept)] = &[
    // A private key block, PEM or PGP, through its END line; or, when the END line is missing
    // (cut output), through its last line of key material: armor headers, blank lines and
    // base64 lines. `$` in multi-line mode makes every body line end at a line end.
    (
        "a private key block",
        r"(?m)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|(?:\r?\n[ \t]*(?:[A-Za-z0-9+/=]+|[A-Za-z][A-Za-z0-9-]*:[^\r\n]*)?[ \t]*\r?$)*)",
        any,
    ),
    // A bare AWS secret access key (40 base64 characters) near its key id.
    (
        "an AWS secret access key",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b[\s\S]{0,120}?[^A-Za-z0-9/+=](?P<s>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)",
        mixed_case,
    ),
    ("an AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", any),
    ("a GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b", any),
    ("a GitHub token", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b", any),
    ("a GitLab token", r"\bgl(?:pat|ptt|dt|rt|soat|cbt)-[A-Za-z0-9_\-]{20,}", any),
    ("a Slack token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}", any),
    ("a Slack token", r"\bxapp-[0-9]+-[A-Za-z0-9-]{10,}", any),
    ("a Stripe secret key", r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}", any),
    ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}\b", any),
    ("an npm token", r"\bnpm_[A-Za-z0-9]{36,}\b", any),
    ("a Google API key", r"\bAIza[0-9A-Za-z_\-]{35}\b", any),
    ("an API key", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}", any),
    ("a JSON Web Token", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", any),
    // `scheme://user:password@host`: user and host stay.
    ("a password in a URL", r#"\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@"'<>]*:(?P<s>[^/\s@"'<>]+)@"#, any),
    // `Authorization: Basic ...` (or Bearer, Token, Digest...): the scheme stays.
    (
        "an Authorization header",
        r#"(?i)\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:(?:basic|bearer|token|digest|negotiate|apikey)\s+)?(?P<s>[^\s"',;]+)"#,
        any,
    ),
    ("a bearer token", r"(?i)\bbearer\s+(?P<s>[A-Za-z0-9._~+/=\-]{8,})", not_a_word),
    // `--password VALUE`, `--token=VALUE`: only after a space or quote, so `--password-stdin`
    // and `--no-password` are not options with a value; a value starting with `-` is the next
    // option. `-p` is not here: it is a port, a parent flag or a prompt in most programs.
    (
        "a password or token option",
        r#"(?i)(?:^|[\s"'])--?(?:password|passwd|pass|token|api-key|apikey|access-token|auth-token|secret|client-secret)(?:=|\s+)(?P<s>"[^"\n]*"|'[^'\n]*'|[^\s"'\-][^\s"']*)"#,
        any,
    ),
    // MySQL and MariaDB take the password glued to `-p` (`-pVALUE`); `-p` alone prompts.
    (
        "a MySQL password option",
        r"\b(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)\b[^\n|;&]*?\s-p(?P<s>[^\s\-][^\s]*)",
        any,
    ),
    // `name=value` and `name: value` where the name says secret (`.env` lines, `AccountKey=`
    // in Azure connection strings, JSON-ish text).
    (
        "a secret assignment",
        r#"(?i)\b[A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|account[_\-]?key|credential)[A-Za-z0-9_.\-]*["']?\s*[=:]\s*(?P<s>"[^"\n]*"|'[^'\n]*'|[^\s"',;&|]+)"#,
        any,
    ),
];

/// JSON keys whose string values are secret whole.
const SECRET_NAME: &str = r"(?i)(secret|token|passw|api_?key|access_?key|private_?key|credential)";

fn any(_: &str) -> bool {
    true
}

/// A token has a digit or punctuation in it, or is long; `bearer instruments` is English.
fn not_a_word(s: &str) -> bool {
    s.len() >= 20 || !s.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Forty base64 characters with both cases: not a SHA-1 in hex, not a word.
fn mixed_case(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_lowercase()) && s.bytes().any(|b| b.is_ascii_uppercase())
}

struct Rules {
    rules: Vec<Rule>,
    secret_name: Option<Regex>,
}

/// The rules are constants checked by the tests below; one that failed to compile would be
/// dropped rather than stop every command from being recorded.
static RULES: LazyLock<Rules> = LazyLock::new(|| Rules {
    rules: RULE_SOURCES
        .iter()
        .filter_map(|(what, p, accept)| Regex::new(p).ok().map(|re| Rule { what, re, accept: *accept }))
        .collect(),
    secret_name: Regex::new(SECRET_NAME).ok(),
});

/// Whether an environment variable's name says its value is secret: it ends with `TOKEN`,
/// `SECRET`, `PASSWORD`, `PASSWD`, `CREDENTIALS` or `APIKEY`, or ends with `_KEY`, `_PASS` or
/// `_PWD` (so `MONKEY`, `BYPASS`, `PWD` and `OLDPWD` are not). Case is ignored.
pub fn is_secret_env_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    const LONG: &[&str] = &["TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIALS", "CREDENTIAL", "APIKEY"];
    const SHORT: &[&str] = &["KEY", "PASS", "PWD"];
    LONG.iter().any(|s| up.ends_with(s))
        || SHORT.iter().any(|s| up.strip_suffix(s).is_some_and(|rest| rest.ends_with('_')))
}

/// Whether a value names where a secret is rather than being one (a key file's path).
fn is_path(value: &str) -> bool {
    (value.starts_with('/') || value.starts_with("~/")) && !value.contains(char::is_whitespace)
}

/// Whether a candidate is written out rather than taken from somewhere at run time: not a
/// shell variable or substitution, not a template placeholder, not already redacted.
fn is_literal(value: &str) -> bool {
    let v = value.trim_matches(|c| c == '"' || c == '\'');
    !v.is_empty() && !v.starts_with('$') && !v.starts_with('%') && !v.contains("{{") && !v.contains(REDACTED)
}

/// Exact secret values and the one regex that finds them in all their forms, built on first use.
#[derive(Default)]
struct Values {
    list: Vec<String>,
    matcher: OnceLock<Option<Regex>>,
}

impl Values {
    fn new(mut list: Vec<String>) -> Values {
        list.retain(|v| v.len() >= MIN_VALUE);
        list.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        list.dedup();
        Values { list, matcher: OnceLock::new() }
    }

    fn matcher(&self) -> Option<&Regex> {
        self.matcher.get_or_init(|| build_matcher(&self.list)).as_ref()
    }
}

/// One alternation of every form of every value, longest first so that a secret containing
/// another is hidden whole. Falls back to the values as written if the variants would make
/// the regex too large.
fn build_matcher(values: &[String]) -> Option<Regex> {
    if values.is_empty() {
        return None;
    }
    let mut forms: Vec<(usize, String)> = Vec::new();
    for v in values {
        if v.len() > MAX_VARIANT {
            forms.push((v.len(), regex::escape(v)));
            continue;
        }
        forms.push((v.len(), split_anywhere(v)));
        if v.len() >= MIN_ENCODED {
            for encoded in encodings(v.as_bytes()) {
                forms.push((encoded.len(), split_anywhere(&encoded)));
            }
        }
    }
    forms.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    forms.dedup_by(|a, b| a.1 == b.1);
    let all: Vec<&str> = forms.iter().map(|(_, p)| p.as_str()).collect();
    let build = |pattern: String| RegexBuilder::new(&pattern).size_limit(1 << 26).build().ok();
    build(all.join("|")).or_else(|| build(values.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|")))
}

/// A pattern for `text` with an optional line break between any two of its characters.
fn split_anywhere(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 12);
    for (i, c) in text.chars().enumerate() {
        if i > 0 {
            out.push_str(BREAK);
        }
        out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
    }
    out
}

/// The forms a value takes when encoded: lower and upper hex, and for each of the three
/// alignments a value can have inside a longer base64 text, in the standard and URL-safe
/// alphabets, the characters that depend on the value alone.
fn encodings(bytes: &[u8]) -> Vec<String> {
    let mut out = vec![hex(bytes, b"0123456789abcdef"), hex(bytes, b"0123456789ABCDEF")];
    // The value encoded on its own (`printf %s "$TOKEN" | base64`), padding included, so that
    // no last character is left beside the redaction.
    let padding = "=".repeat((3 - bytes.len() % 3) % 3);
    for alphabet in [STANDARD, URL_SAFE] {
        out.push(format!("{}{padding}", base64(bytes, alphabet)));
    }
    for shift in 0..3usize {
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(bytes);
        let first = (8 * shift).div_ceil(6);
        let end = 8 * buf.len() / 6;
        for alphabet in [STANDARD, URL_SAFE] {
            let encoded = base64(&buf, alphabet);
            if let Some(core) = encoded.get(first..end).filter(|c| c.len() >= 8) {
                out.push(core.to_owned());
            }
        }
    }
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding (the last character's spare bits zero).
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn hex(bytes: &[u8], digits: &[u8; 16]) -> String {
    bytes.iter().flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]).map(char::from).collect()
}

/// Finds secrets in text and replaces them. Cheap to clone: the compiled matchers are shared.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<Values>,
}

impl std::fmt::Debug for Redactor {
    // Never the values: a debug print of the bus must not be the leak.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("values", &self.values.list.len()).finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor that also hides these exact values (shorter than 4 characters are ignored).
    pub fn new(secret_values: Vec<String>) -> Redactor {
        Redactor { values: Arc::new(Values::new(secret_values)) }
    }

    /// This redactor, also hiding `value` (an API key read at run time, say).
    pub fn with_secret(self, value: String) -> Redactor {
        self.with_secrets([value])
    }

    /// This redactor, also hiding these values; itself (sharing its matcher) if it knows them all.
    pub fn with_secrets(self, values: impl IntoIterator<Item = String>) -> Redactor {
        let new: Vec<String> =
            values.into_iter().filter(|v| v.len() >= MIN_VALUE && !self.values.list.contains(v)).collect();
        if new.is_empty() {
            return self;
        }
        let mut list = self.values.list.clone();
        list.extend(new);
        Redactor::new(list)
    }

    /// This redactor, also hiding the values of the variables whose names say secret (see
    /// [`is_secret_env_name`]), except short values and paths to where a secret is kept.
    pub fn with_env_secrets<K: AsRef<str>, V: AsRef<str>>(self, vars: impl IntoIterator<Item = (K, V)>) -> Redactor {
        let values: Vec<String> = vars
            .into_iter()
            .filter(|(k, v)| {
                let v = v.as_ref();
                is_secret_env_name(k.as_ref()) && v.len() >= MIN_ENV_VALUE && !is_path(v)
            })
            .map(|(_, v)| v.as_ref().to_owned())
            .collect();
        self.with_secrets(values)
    }

    /// How many exact values it hides.
    pub fn secret_count(&self) -> usize {
        self.values.list.len()
    }

    /// Whether a JSON key's string value is secret whole: its name says so, or it is an
    /// environment variable's name (upper case) that does.
    fn is_secret_key(&self, name: &str) -> bool {
        RULES.secret_name.as_ref().is_some_and(|re| re.is_match(name))
            || (name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && is_secret_env_name(name))
    }

    /// The text with every secret replaced; and whether anything was.
    pub fn redact(&self, text: &str) -> (String, bool) {
        let mut out: Cow<'_, str> = Cow::Borrowed(text);
        if let Some(m) = self.values.matcher()
            && let Cow::Owned(s) = m.replace_all(&out, regex::NoExpand(REDACTED))
        {
            out = Cow::Owned(s);
        }
        for rule in &RULES.rules {
            if let Cow::Owned(s) = rule.re.replace_all(&out, |c: &Captures<'_>| replacement(rule, c)) {
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

    /// Every string inside a JSON value, redacted; a sealed secret input is redacted whole.
    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            v if steward_core::inputs::is_sealed(v) => Value::String(REDACTED.into()),
            Value::String(s) => Value::String(self.redact(s).0),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.redact_json(v)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(_) if self.is_secret_key(k) => Value::String(REDACTED.into()),
                            other => self.redact_json(other),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// What kind of secret `text` holds written out literally, if any: for `steward validate`,
    /// which warns about secrets in workflow files. `key` is the mapping key `text` is the
    /// value of. Only literal values count: `$TOKEN`, `{{inputs.token}}` and the like are how
    /// a secret should arrive, and a short value after a secret-sounding name is taken for a
    /// word (`token: yes`).
    pub fn literal_secret(&self, key: Option<&str>, text: &str) -> Option<String> {
        if let Some(k) = key
            && !k.to_ascii_lowercase().ends_with("_env")
            && is_secret_env_name(k)
            && text.len() >= MIN_ENV_VALUE
            && is_literal(text)
        {
            return Some(format!("the value of `{k}`"));
        }
        if self.values.matcher().is_some_and(|m| m.is_match(text)) {
            return Some("a configured secret".into());
        }
        RULES.rules.iter().find_map(|rule| {
            let found = rule.re.captures_iter(text).any(|c| match c.name("s") {
                None => true,
                Some(s) => s.as_str().len() >= MIN_ENV_VALUE && is_literal(s.as_str()) && (rule.accept)(s.as_str()),
            });
            found.then(|| rule.what.to_owned())
        })
    }
}

/// What replaces one match of a rule: the whole match, or only its `s` group.
fn replacement(rule: &Rule, c: &Captures<'_>) -> String {
    let Some(all) = c.get(0) else { return String::new() };
    match c.name("s") {
        None => REDACTED.to_owned(),
        Some(s) if (rule.accept)(s.as_str()) => {
            let text = all.as_str();
            let (from, to) = (s.start() - all.start(), s.end() - all.start());
            format!("{}{REDACTED}{}", &text[..from], &text[to..])
        }
        Some(_) => all.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(r: &Redactor, text: &str) -> String {
        r.redact(text).0
    }

    #[test]
    fn every_pattern_compiles() {
        for (_, p, _) in RULE_SOURCES {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
        assert!(Regex::new(SECRET_NAME).is_ok());
        assert_eq!(RULES.rules.len(), RULE_SOURCES.len());
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
            assert_eq!(redacted(&r, input), want, "{input}");
        }
        assert!(!r.redact("plain text").1);
        assert!(r.redact("token=abcd").1);
    }

    /// Issue 11 (point 6), TERM-LOG-002: each shape the redactor learned, with a benign
    /// look-alike of it that must stay as it is.
    #[test]
    fn new_token_shapes_are_redacted_and_look_alikes_are_not() {
        let r = Redactor::default();
        let hidden = [
            // Stripe.
            ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe ***REDACTED***"),
            ("sk_test_51Hh2dJKl0abcdefghij end", "***REDACTED*** end"),
            ("rk_live_abcdefghij0123456789", "***REDACTED***"),
            // GitLab, Hugging Face, npm.
            ("glpat-xY1zAbCdEfGhIjKlMnOp done", "***REDACTED*** done"),
            ("HF hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "HF ***REDACTED***"),
            ("npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "***REDACTED***"),
            // Slack.
            ("xoxb-123456789012-abcdefghijkl", "***REDACTED***"),
            ("xoxp-1-2-3-abcdefabcdef", "***REDACTED***"),
            ("xapp-1-A0123456789-abcdef", "***REDACTED***"),
            // Authorization headers keep their scheme.
            ("-H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='", "-H 'Authorization: Basic ***REDACTED***'"),
            ("authorization=Bearer abc", "authorization=Bearer ***REDACTED***"),
            ("Proxy-Authorization: Digest zzzzzz", "Proxy-Authorization: Digest ***REDACTED***"),
            // URLs with a password keep the user and host.
            ("postgres://app:s3cret@db:5432/x", "postgres://app:***REDACTED***@db:5432/x"),
            ("redis://:pw-only@cache", "redis://:***REDACTED***@cache"),
            (
                "clone https://bot:ghs-not-a-token@git.example/x.git",
                "clone https://bot:***REDACTED***@git.example/x.git",
            ),
            // Options.
            ("psql --password hunter2 -h db", "psql --password ***REDACTED*** -h db"),
            ("login --password=hunter2", "login --password=***REDACTED***"),
            ("cli --token abc123 --verbose", "cli --token ***REDACTED*** --verbose"),
            ("cli --token=\"abc 123\"", "cli --token=***REDACTED***"),
            ("mysql -u root -phunter2 db", "mysql -u root -p***REDACTED*** db"),
            // Azure connection strings.
            (
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Zm9vYmFy+/==;EndpointSuffix=core.windows.net",
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***REDACTED***;EndpointSuffix=core.windows.net",
            ),
            // PGP private key blocks, and key blocks whose END line is missing.
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGXyz\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----\nok",
                "***REDACTED***\nok",
            ),
            ("x\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\nAAAAB3Nza", "x\n***REDACTED***"),
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBGXyz+/abc\nmore01==\nnext step ran\n",
                "***REDACTED***\nnext step ran\n",
            ),
            // A bare AWS secret access key next to its key id.
            ("AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", "***REDACTED*** ***REDACTED***\n"),
            (
                "id,secret\nAKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "id,secret\n***REDACTED***,***REDACTED***",
            ),
        ];
        for (input, want) in hidden {
            assert_eq!(redacted(&r, input), want, "{input}");
        }
        let kept = [
            "pk_live_is_publishable and task_live_stream_01234567890",
            "glpat- is the GitLab prefix",
            "from huggingface_hub import hf_hub_download",
            "npm_config_cache=/tmp/npm",
            "xapp-config and xoxb- prefixes",
            "basic arithmetic and the authorization step failed; bearer instruments",
            "http://localhost:8080/a@b and git@github.com:org/repo and ssh://git@host:22/x",
            "docker login --password-stdin; cli --token-file ./t; --no-password; mkdir -p build; ssh -p 2222 host",
            "mysql -p db",
            "AccountName=acct;EndpointSuffix=core.windows.net",
            "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
            // A SHA-1 next to a key id is not its secret (the id itself still is).
            "3f786850e387550fdab836ed7e6dc881de23001b",
        ];
        for input in kept {
            assert_eq!(redacted(&r, input), input);
        }
        let sha_near_id = "AKIAIOSFODNN7EXAMPLE commit 3f786850e387550fdab836ed7e6dc881de23001b";
        assert_eq!(redacted(&r, sha_near_id), "***REDACTED*** commit 3f786850e387550fdab836ed7e6dc881de23001b");
    }

    /// Issue 11 (point 6): a configured value is found in base64 (either alphabet, at any
    /// alignment inside a longer encoding), in hex, and split by a line break.
    #[test]
    fn configured_values_are_found_encoded_and_split() {
        let secret = "correct-horse-battery";
        let r = Redactor::new(vec![secret.into()]);
        let b64 = base64(secret.as_bytes(), STANDARD);
        assert_eq!(
            redacted(&r, &format!("x {}==", base64(b"correct-horse-batt", STANDARD))),
            "x Y29ycmVjdC1ob3JzZS1iYXR0=="
        );
        // Inside a longer encoding, at most the characters the value shares with its neighbours stay.
        let longer = redacted(&r, &format!("pad {}", base64(b"correct-horse-battery!", STANDARD)));
        assert!(longer.starts_with("pad ***REDACTED***") && longer.len() <= "pad ***REDACTED***".len() + 2, "{longer}");
        for text in [
            format!("echo {b64}"),
            format!("hex {}", hex(secret.as_bytes(), b"0123456789abcdef")),
            format!("HEX {}", hex(secret.as_bytes(), b"0123456789ABCDEF")),
            // `Basic base64(user:secret)`-like: the value at another alignment.
            format!("blob {}", base64(format!("u:{secret}").as_bytes(), STANDARD)),
            format!("blob {}", base64(format!("ab:{secret}!").as_bytes(), URL_SAFE)),
            "wrapped correct-horse-\nbattery here".into(),
            "crlf correct-ho\r\nrse-battery".into(),
            format!("b64 wrapped {}\n{}", &b64[..10], &b64[10..]),
        ] {
            let (out, changed) = r.redact(&text);
            assert!(changed, "{text:?}");
            assert!(!out.contains(secret) && !out.contains(&b64[2..b64.len() - 2]), "{text:?} -> {out:?}");
            assert!(out.contains(REDACTED), "{out}");
        }
        // Benign neighbours stay.
        for text in ["correct-horse-batter", "horse battery correct", "Y29ycmVjdC1ob3JzZ"] {
            assert_eq!(redacted(&r, text), text);
        }
        assert_eq!(base64(b"Man", STANDARD), "TWFu");
        assert_eq!(base64(b"Ma", STANDARD), "TWE");
    }

    /// Issue 11 (point 6), TERM-API-004: values of variables whose names say secret are secret.
    #[test]
    fn secret_named_environment_values_are_hidden() {
        for name in [
            "GITHUB_TOKEN",
            "MY_SERVICE_KEY",
            "OPENAI_API_KEY",
            "DB_PASSWORD",
            "PGPASSWORD",
            "CLIENT_SECRET",
            "X_CREDENTIALS",
            "DB_PASS",
            "mysql_pwd",
        ] {
            assert!(is_secret_env_name(name), "{name}");
        }
        for name in ["MONKEY", "BYPASS", "OLDPWD", "PWD", "PATH", "KEY_ID", "AWS_ACCESS_KEY_ID", "MAX_TOKENS"] {
            assert!(!is_secret_env_name(name), "{name}");
        }
        let r = Redactor::default().with_env_secrets([
            ("SERVICE_KEY", "plainvalue42"),
            ("USE_TOKEN", "true"),
            ("SSH_KEY", "/home/u/.ssh/id_ed25519"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(r.secret_count(), 1);
        assert_eq!(redacted(&r, "got plainvalue42 and true at /home/u"), "got ***REDACTED*** and true at /home/u");
        let j = r.redact_json(&serde_json::json!({"MY_SERVICE_KEY": "v", "sort_key": "k", "SORT_ORDER": "asc"}));
        assert_eq!(j, serde_json::json!({"MY_SERVICE_KEY": REDACTED, "sort_key": "k", "SORT_ORDER": "asc"}));
        // A redactor that knows a value already is itself, sharing its compiled matcher.
        let again = r.clone().with_secret("plainvalue42".into());
        assert!(Arc::ptr_eq(&again.values, &r.values));
        assert!(!format!("{r:?}").contains("plainvalue42"));
    }

    #[test]
    fn non_utf8_bytes_json_and_sealed_values_are_redacted() {
        let r = Redactor::default();
        let mut bytes = b"bad \xff\xfe bytes password=s3cr3t".to_vec();
        bytes.push(0x80);
        let (text, changed) = r.redact_bytes(&bytes);
        assert!(changed);
        assert!(text.contains("password=***REDACTED***") && !text.contains("s3cr3t"), "{text}");
        let j = r.redact_json(&serde_json::json!({"api_key": "x", "cmd": "token=abc", "n": 1}));
        assert_eq!(j, serde_json::json!({"api_key": REDACTED, "cmd": "token=***REDACTED***", "n": 1}));
        let sealed = serde_json::json!({"inputs": {"tok": {steward_core::inputs::SEALED_KEY: "c:00"}, "n": 2}});
        assert_eq!(r.redact_json(&sealed), serde_json::json!({"inputs": {"tok": REDACTED, "n": 2}}));
    }

    /// Issue 11 (point 6): what `steward validate` calls a literal secret, and what it does not.
    #[test]
    fn literal_secrets_are_told_from_references() {
        let r = Redactor::new(vec!["configured-value-1".into()]);
        let found = |key: Option<&str>, text: &str| r.literal_secret(key, text);
        assert_eq!(
            found(Some("run"), "gh api -H 'x' ghp_abcdefghijklmnopqrstuvwxyz0123456789AB").as_deref(),
            Some("a GitHub token")
        );
        assert_eq!(found(Some("run"), "psql postgres://app:hunter22@db/x").as_deref(), Some("a password in a URL"));
        assert_eq!(found(Some("run"), "mysql --password=hunter22").as_deref(), Some("a password or token option"));
        assert_eq!(found(Some("API_TOKEN"), "abc123def").as_deref(), Some("the value of `API_TOKEN`"));
        assert_eq!(found(Some("prompt"), "use configured-value-1").as_deref(), Some("a configured secret"));
        for (key, text) in [
            (Some("run"), "psql postgres://app:$PGPASS@db/x"),
            (Some("run"), "curl -H \"Authorization: Bearer $TOKEN\" x"),
            (Some("run"), "echo password={{inputs.pw}}"),
            (Some("API_TOKEN"), "{{inputs.token}}"),
            (Some("api_key_env"), "OPENAI_API_KEY"),
            (Some("max_tokens"), "100000"),
            (Some("prompt"), "Reply with token: yes"),
            (Some("run"), "echo hello"),
        ] {
            assert_eq!(found(key, text), None, "{key:?} {text}");
        }
    }
}
