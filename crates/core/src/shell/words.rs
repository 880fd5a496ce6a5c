//! Words as the shell expands them, as far as a static reading can: quotes removed, known values in, unknowns marked.

use brush_parser::word::{
    self, BraceExpressionMember, BraceExpressionOrText, Parameter, ParameterExpr, TildeExpr, WordPiece,
    WordPieceWithSource,
};

use super::walk::{Known, Walker};
use super::{ParamUse, Quoting, ShellWord};

/// Brace expansion stops here: more words than this are not worth judging one by one.
const MAX_BRACE_WORDS: usize = 64;

/// Builds the words one shell word expands to.
#[derive(Default)]
struct Builder {
    words: Vec<ShellWord>,
    cur: ShellWord,
    /// The current word exists even if empty (it had quotes).
    quoted: bool,
    split: bool,
}

impl Builder {
    fn new(split: bool) -> Builder {
        Builder { cur: ShellWord { literal: true, ..ShellWord::default() }, split, ..Builder::default() }
    }

    fn push(&mut self, text: &str) {
        self.cur.text.push_str(text);
        if self.cur.literal {
            self.cur.known = self.cur.text.len();
        }
    }

    fn glob_text(&mut self, text: &str) {
        // `[` starts a pattern only when a `]` closes it (`[ -d x ]` is the test command).
        let bracket = text.find('[').filter(|k| text[k + 1..].contains(']'));
        let star = text.find(['*', '?']);
        let first = match (star, bracket) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.cur.glob.is_none() {
            self.cur.glob = first.map(|k| self.cur.text.len() + k);
        }
        self.push(text);
    }

    fn unknown(&mut self, shown: &str) {
        self.cur.expanded = true;
        if self.cur.text.is_empty() {
            self.cur.leading_param = true;
        }
        if self.cur.literal {
            self.cur.known = self.cur.text.len();
            self.cur.literal = false;
        }
        self.cur.text.push_str(shown);
    }

    fn finish_word(&mut self) {
        let cur = std::mem::replace(&mut self.cur, ShellWord { literal: true, ..ShellWord::default() });
        if !cur.text.is_empty() || self.quoted || !cur.literal {
            self.words.push(cur);
        }
        self.quoted = false;
    }

    fn finish(mut self) -> Vec<ShellWord> {
        self.finish_word();
        self.words
    }
}

/// Decodes the escapes of ANSI-C quoting (`$'\x72m'` is `rm`).
fn ansi_c(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    let take = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, radix: u32, max: usize| {
        let mut v = 0u32;
        let mut n = 0;
        while n < max {
            match chars.peek().and_then(|c| c.to_digit(radix)) {
                Some(d) => {
                    v = v * radix + d;
                    chars.next();
                    n += 1;
                }
                None => break,
            }
        }
        (v, n)
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        match e {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'e' | 'E' => out.push('\u{1b}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            'x' | 'u' | 'U' => {
                let max = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let (v, n) = take(&mut chars, 16, max);
                match char::from_u32(v).filter(|_| n > 0) {
                    Some(ch) => out.push(ch),
                    None => {
                        out.push('\\');
                        out.push(e);
                    }
                }
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                let (rest, n) = take(&mut chars, 8, 2);
                v = v * 8u32.pow(n as u32) + rest;
                out.extend(char::from_u32(v));
            }
            'c' => {
                if let Some(ch) = chars.next() {
                    out.extend(char::from_u32(u32::from(ch) & 0x1f));
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn expand_braces(list: &[BraceExpressionOrText], budget: &mut usize) -> Option<Vec<String>> {
    let mut acc = vec![String::new()];
    for item in list {
        let alternatives: Vec<String> = match item {
            BraceExpressionOrText::Text(t) => vec![t.clone()],
            BraceExpressionOrText::Expr(members) => {
                let mut alts = Vec::new();
                for m in members {
                    match m {
                        BraceExpressionMember::NumberSequence { start, end, increment } => {
                            let step = increment.unsigned_abs().max(1);
                            let (lo, hi) = (start.min(end), start.max(end));
                            let count = hi.abs_diff(*lo) / step + 1;
                            if count > MAX_BRACE_WORDS as u64 {
                                return None;
                            }
                            let mut v = *start;
                            for _ in 0..count {
                                alts.push(v.to_string());
                                v = if start <= end {
                                    v.saturating_add(step as i64)
                                } else {
                                    v.saturating_sub(step as i64)
                                };
                            }
                        }
                        BraceExpressionMember::CharSequence { start, end, .. } => {
                            let (lo, hi) = (u32::from(*start.min(end)), u32::from(*start.max(end)));
                            if hi - lo > MAX_BRACE_WORDS as u32 {
                                return None;
                            }
                            alts.extend((lo..=hi).filter_map(char::from_u32).map(String::from));
                        }
                        BraceExpressionMember::Child(child) => alts.extend(expand_braces(child, budget)?),
                    }
                }
                alts
            }
        };
        let mut next = Vec::new();
        for a in &acc {
            for b in &alternatives {
                next.push(format!("{a}{b}"));
            }
        }
        if next.len() > *budget {
            return None;
        }
        acc = next;
    }
    *budget = budget.saturating_sub(acc.len());
    Some(acc)
}

impl Walker {
    /// A command word: brace expansion, then the words it expands to (unknown values stay one word).
    pub(crate) fn words(&mut self, raw: &str) -> Vec<ShellWord> {
        if raw.contains('{')
            && raw.contains([',', '.'])
            && let Ok(Some(list)) = word::parse_brace_expansions(raw, &self.opts)
            && list.iter().any(|i| matches!(i, BraceExpressionOrText::Expr(_)))
        {
            let mut budget = MAX_BRACE_WORDS;
            if let Some(alts) = expand_braces(&list, &mut budget) {
                return alts.iter().flat_map(|a| self.expand(a, true, Quoting::Unquoted)).collect();
            }
        }
        self.expand(raw, true, Quoting::Unquoted)
    }

    /// A word that is not split (assignment values, redirect targets, `[[ ]]` operands, case words).
    pub(crate) fn word_no_split(&mut self, raw: &str) -> ShellWord {
        let mut words = self.expand(raw, false, Quoting::Unquoted);
        match words.len() {
            0 => ShellWord { literal: true, ..ShellWord::default() },
            1 => words.remove(0),
            _ => {
                let first = words.remove(0);
                words.into_iter().fold(first, |mut acc, w| {
                    acc.text.push(' ');
                    acc.text.push_str(&w.text);
                    acc.literal &= w.literal;
                    acc.params.extend(w.params);
                    acc
                })
            }
        }
    }

    /// A here-document body that expands: quotes in it are plain characters.
    pub(crate) fn heredoc_word(&mut self, body: &str) -> ShellWord {
        let mut b = Builder::new(false);
        match word::parse_heredoc(body, &self.opts) {
            Ok(pieces) => self.pieces(body, &pieces, Quoting::HereDoc, &mut b),
            Err(_) => b.unknown(body),
        }
        b.quoted = true;
        let mut words = b.finish();
        if words.is_empty() { ShellWord::default() } else { words.remove(0) }
    }

    /// The text of an arithmetic expression: its substitutions run, its parameters are recorded.
    pub(crate) fn arithmetic_text(&mut self, text: &str) {
        self.arithmetic += 1;
        let mut b = Builder::new(false);
        if let Ok(pieces) = word::parse(text, &self.opts) {
            self.pieces(text, &pieces, Quoting::Double, &mut b);
        }
        self.arithmetic -= 1;
    }

    fn expand(&mut self, raw: &str, split: bool, quoting: Quoting) -> Vec<ShellWord> {
        let mut b = Builder::new(split);
        match word::parse(raw, &self.opts) {
            Ok(pieces) => self.pieces(raw, &pieces, quoting, &mut b),
            Err(_) => b.unknown(raw),
        }
        b.finish()
    }

    fn pieces(&mut self, raw: &str, pieces: &[WordPieceWithSource], q: Quoting, b: &mut Builder) {
        for p in pieces {
            let shown = raw.get(p.start_index..p.end_index).unwrap_or("?");
            match &p.piece {
                WordPiece::Text(t) if q == Quoting::Unquoted => b.glob_text(t),
                WordPiece::Text(t) | WordPiece::SingleQuotedText(t) => {
                    b.quoted |= matches!(p.piece, WordPiece::SingleQuotedText(_));
                    b.push(t);
                }
                WordPiece::AnsiCQuotedText(t) => {
                    b.quoted = true;
                    b.push(&ansi_c(t));
                }
                WordPiece::DoubleQuotedSequence(inner) | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    b.quoted = true;
                    self.pieces(raw, inner, Quoting::Double, b);
                }
                WordPiece::TildeExpansion(t) => match t {
                    TildeExpr::Home if b.cur.text.is_empty() => {
                        b.cur.home = true;
                        b.push("~");
                    }
                    TildeExpr::UserHome(u) if b.cur.text.is_empty() => {
                        b.cur.home = true;
                        b.push(&format!("~{u}"));
                    }
                    TildeExpr::WorkingDir => b.push("."),
                    _ => b.unknown(shown),
                },
                WordPiece::ParameterExpansion(expr) => self.parameter(expr, shown, q, b),
                WordPiece::CommandSubstitution(text) => {
                    let value = self.substitution(text);
                    self.value(value.as_ref(), shown, q, b);
                }
                WordPiece::BackquotedCommandSubstitution(text) => {
                    let text = text.replace("\\`", "`").replace("\\$", "$").replace("\\\\", "\\");
                    self.backquoted += 1;
                    let value = self.substitution(&text);
                    self.backquoted -= 1;
                    self.value(value.as_ref(), shown, q, b);
                }
                WordPiece::EscapeSequence(s) => {
                    let unescaped = s.strip_prefix('\\').unwrap_or(s);
                    if unescaped != "\n" {
                        b.quoted = true;
                        b.push(unescaped);
                    }
                }
                WordPiece::ArithmeticExpression(e) => {
                    self.arithmetic_text(&e.value);
                    b.unknown(shown);
                }
            }
        }
    }

    /// A value found for an expansion (`None`: unknown), split when unquoted.
    fn value(&mut self, value: Option<&Known>, shown: &str, q: Quoting, b: &mut Builder) {
        b.cur.expanded = true;
        let Some(Known { text: v, home }) = value else {
            b.unknown(shown);
            return;
        };
        if *home && b.cur.text.is_empty() {
            b.cur.home = true;
        }
        if q != Quoting::Unquoted || !b.split {
            b.push(v);
            return;
        }
        if self.ifs_changed {
            b.unknown(shown);
            return;
        }
        // Field splitting with the default IFS, then globbing of each field.
        let mut first = true;
        if v.starts_with(char::is_whitespace) && !b.cur.text.is_empty() {
            b.finish_word();
        }
        for field in v.split_whitespace() {
            if !first {
                b.finish_word();
            }
            first = false;
            b.glob_text(field);
        }
        if v.ends_with(char::is_whitespace) && !v.trim().is_empty() {
            b.finish_word();
        }
    }

    fn parameter(&mut self, expr: &ParameterExpr, shown: &str, q: Quoting, b: &mut Builder) {
        use ParameterExpr as P;
        let (parameter, indirect) = match expr {
            P::Parameter { parameter, indirect }
            | P::UseDefaultValues { parameter, indirect, .. }
            | P::AssignDefaultValues { parameter, indirect, .. }
            | P::IndicateErrorIfNullOrUnset { parameter, indirect, .. }
            | P::UseAlternativeValue { parameter, indirect, .. }
            | P::ParameterLength { parameter, indirect }
            | P::RemoveSmallestSuffixPattern { parameter, indirect, .. }
            | P::RemoveLargestSuffixPattern { parameter, indirect, .. }
            | P::RemoveSmallestPrefixPattern { parameter, indirect, .. }
            | P::RemoveLargestPrefixPattern { parameter, indirect, .. }
            | P::Substring { parameter, indirect, .. }
            | P::Transform { parameter, indirect, .. }
            | P::UppercaseFirstChar { parameter, indirect, .. }
            | P::UppercasePattern { parameter, indirect, .. }
            | P::LowercaseFirstChar { parameter, indirect, .. }
            | P::LowercasePattern { parameter, indirect, .. }
            | P::ReplaceSubstring { parameter, indirect, .. } => (Some(parameter), *indirect),
            P::VariableNames { .. } | P::MemberKeys { .. } => (None, false),
        };
        let name = match parameter {
            Some(Parameter::Named(n) | Parameter::NamedWithIndex { name: n, .. }) => Some(n.clone()),
            Some(Parameter::NamedWithAllIndices { name, .. }) => Some(name.clone()),
            _ => None,
        };
        if let Some(n) = &name {
            b.cur.params.push(n.clone());
            if self.code_depth == 0 {
                self.out.params.push(ParamUse {
                    name: n.clone(),
                    quoting: q,
                    arithmetic: self.arithmetic > 0,
                    backquoted: self.backquoted > 0,
                });
            }
        }
        // Words inside the expansion (`${X:-$(cmd)}`) can run commands too.
        let nested: Vec<&str> = match expr {
            P::UseDefaultValues { default_value: v, .. } | P::AssignDefaultValues { default_value: v, .. } => {
                v.iter().map(String::as_str).collect()
            }
            P::UseAlternativeValue { alternative_value: v, .. } => v.iter().map(String::as_str).collect(),
            P::IndicateErrorIfNullOrUnset { error_message: v, .. } => v.iter().map(String::as_str).collect(),
            P::ReplaceSubstring { pattern, replacement, .. } => {
                std::iter::once(pattern.as_str()).chain(replacement.iter().map(String::as_str)).collect()
            }
            P::RemoveSmallestSuffixPattern { pattern: v, .. }
            | P::RemoveLargestSuffixPattern { pattern: v, .. }
            | P::RemoveSmallestPrefixPattern { pattern: v, .. }
            | P::RemoveLargestPrefixPattern { pattern: v, .. } => v.iter().map(String::as_str).collect(),
            P::Substring { offset, length, .. } => {
                std::iter::once(offset.value.as_str()).chain(length.iter().map(|l| l.value.as_str())).collect()
            }
            _ => Vec::new(),
        };
        let mut nested_words: Vec<ShellWord> = Vec::new();
        for n in nested {
            let mut inner = Builder::new(false);
            if let Ok(pieces) = word::parse(n, &self.opts) {
                self.pieces(n, &pieces, q, &mut inner);
            }
            let w = inner.finish();
            b.cur.params.extend(w.iter().flat_map(|w| w.params.clone()));
            nested_words.extend(w);
        }
        let known: Option<Option<Known>> = match (&name, indirect) {
            (Some(n), false) => self.vars.get(n).cloned(),
            _ => Some(None),
        };
        match (expr, name.as_deref(), known) {
            (P::Parameter { .. }, Some(_), Some(Some(v))) => self.value(Some(&v), shown, q, b),
            (P::Parameter { .. }, Some("HOME"), None) if b.cur.text.is_empty() => {
                b.cur.home = true;
                b.cur.expanded = true;
                b.push("~");
            }
            (P::Parameter { .. }, Some("PWD"), None) => {
                b.cur.expanded = true;
                b.push(".");
            }
            (P::Parameter { .. }, Some("TMPDIR"), None) => {
                b.cur.expanded = true;
                b.push("/tmp");
            }
            (P::UseDefaultValues { .. } | P::AssignDefaultValues { .. }, Some("HOME"), None)
                if b.cur.text.is_empty() =>
            {
                // `${HOME:-/}`: HOME is set wherever a step runs.
                b.cur.home = true;
                b.cur.expanded = true;
                b.push("~");
            }
            (P::UseDefaultValues { .. }, Some(_), Some(Some(v))) if !v.text.is_empty() => {
                self.value(Some(&v), shown, q, b)
            }
            (P::UseDefaultValues { .. }, Some(_), Some(Some(_))) => match nested_words.first() {
                Some(d) if d.literal => {
                    let d = Known { text: d.text.clone(), home: d.home };
                    self.value(Some(&d), shown, q, b)
                }
                _ => b.unknown(shown),
            },
            (P::IndicateErrorIfNullOrUnset { .. }, _, _) => {
                // `${X:?}` is never empty: `"${X:?}/"` cannot become `/`.
                let leading = b.cur.text.is_empty();
                b.unknown(shown);
                if leading {
                    b.cur.leading_param = false;
                }
            }
            _ => b.unknown(shown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ansi_c;

    #[test]
    fn ansi_c_quoting_is_decoded() {
        assert_eq!(ansi_c(r"\x72\x6d"), "rm");
        assert_eq!(ansi_c(r"\162\155"), "rm");
        assert_eq!(ansi_c(r"a\tb\n"), "a\tb\n");
        assert_eq!(ansi_c(r"\u0072m"), "rm");
        assert_eq!(ansi_c(r"\'x\\"), "'x\\");
    }
}
