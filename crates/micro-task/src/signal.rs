//! Completion signals: the `<mt_complete>` and `<blocked>` blocks a model ends a micro-task iteration with
//! (§2.6.6.8.10.3, Appendix C), and the evidence check that exposes a false completion without IO.
//!
//! Only the text between an opening tag and the first closing tag after it counts, and only the first
//! opening tag of each kind is looked at, so a tag the model merely mentions elsewhere changes nothing.
//! Inside `<mt_complete>`, a line starting with a bullet (`-`, `*`, `•`), or a line starting with a quote
//! after the `EVIDENCE:` header, is an evidence line: `"criterion" → path:START-END` or `path:LINE`, with
//! `→`, `->` or `=>`, and straight or curly quotes. Evidence lines that do not parse are kept aside in
//! [`CompletionSignal::malformed_evidence`] so the executor can show the model what it got wrong.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use steward_core::relative_path::problem as path_problem;

const COMPLETE_OPEN: &str = "<mt_complete>";
const COMPLETE_CLOSE: &str = "</mt_complete>";
const BLOCKED_OPEN: &str = "<blocked>";
const BLOCKED_CLOSE: &str = "</blocked>";
const ARROWS: [&str; 3] = ["→", "->", "=>"];
const QUOTES: [char; 3] = ['"', '“', '”'];
const BULLETS: [char; 3] = ['-', '*', '•'];

/// What the model's response says about the micro-task's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompletionSignal {
    /// A closed `<mt_complete>` block was found. Says nothing about whether the claim holds.
    pub claimed_complete: bool,
    /// The block's `MT_ID:` value, when present and non-empty.
    pub mt_id: Option<String>,
    /// The evidence lines that parsed, in the order written.
    pub evidence: Vec<Evidence>,
    /// Evidence lines that did not parse, trimmed, in the order written.
    pub malformed_evidence: Vec<String>,
    /// A closed `<blocked>` block was found.
    pub blocked: bool,
    /// The `REASON:` line, else the whole trimmed `<blocked>` block; `None` when that is empty too.
    pub blocked_reason: Option<String>,
    /// The `NEED:` line, when present and non-empty.
    pub blocked_need: Option<String>,
    /// The recognised blocks verbatim, tags included, in response order and separated by a newline.
    pub raw_block: Option<String>,
}

/// One acceptance criterion and the file lines the model says satisfy it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The criterion as quoted, trimmed.
    pub criterion: String,
    /// The cited path, as written.
    pub path: String,
    /// First cited line, 1-based.
    pub line_start: u32,
    /// Last cited line, inclusive; equal to `line_start` for a single line.
    pub line_end: u32,
}

/// Why a piece of evidence cannot be true.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvidenceProblem {
    /// The cited file does not exist (or its path could not be inside the workspace).
    MissingFile {
        /// The cited path.
        path: String,
    },
    /// The cited range runs past the end of the file.
    LineOutOfRange {
        /// The cited path.
        path: String,
        /// The last cited line.
        line_end: u32,
        /// How many lines the file has.
        lines: u32,
    },
}

impl fmt::Display for EvidenceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingFile { path } => write!(f, "evidence cites `{path}`, which does not exist"),
            Self::LineOutOfRange { path, line_end, lines } => {
                write!(f, "evidence cites `{path}` line {line_end}, but the file has {lines} lines")
            }
        }
    }
}

/// A block's verbatim span and its inner text.
struct Block<'a> {
    start: usize,
    raw: &'a str,
    body: &'a str,
}

/// Finds the first `open` and the first `close` after it; an unclosed block is no block.
fn find_block<'a>(text: &'a str, open: &str, close: &str) -> Option<Block<'a>> {
    let start = text.find(open)?;
    let body_start = start + open.len();
    let len = text.get(body_start..)?.find(close)?;
    let body_end = body_start + len;
    Some(Block { start, raw: text.get(start..body_end + close.len())?, body: text.get(body_start..body_end)? })
}

/// Reads the completion and blocked signals out of a model response. Never fails: anything
/// unrecognised simply leaves the corresponding fields at their defaults.
pub fn parse_completion_signal(response: &str) -> CompletionSignal {
    let mut signal = CompletionSignal::default();
    let complete = find_block(response, COMPLETE_OPEN, COMPLETE_CLOSE);
    let blocked = find_block(response, BLOCKED_OPEN, BLOCKED_CLOSE);
    if let Some(block) = &complete {
        signal.claimed_complete = true;
        read_complete_body(block.body, &mut signal);
    }
    if let Some(block) = &blocked {
        signal.blocked = true;
        read_blocked_body(block.body, &mut signal);
    }
    let mut raws: Vec<&Block<'_>> = complete.iter().chain(blocked.iter()).collect();
    raws.sort_by_key(|b| b.start);
    if !raws.is_empty() {
        signal.raw_block = Some(raws.iter().map(|b| b.raw).collect::<Vec<_>>().join("\n"));
    }
    signal
}

fn read_complete_body(body: &str, signal: &mut CompletionSignal) {
    let mut in_evidence = false;
    for line in body.lines() {
        let line = line.trim();
        if let Some(id) = line.strip_prefix("MT_ID:") {
            let id = id.trim();
            if signal.mt_id.is_none() && !id.is_empty() {
                signal.mt_id = Some(id.to_string());
            }
            continue;
        }
        // Models sometimes put the first item on the header line itself.
        let (candidate, bulleted) = if let Some(rest) = line.strip_prefix("EVIDENCE:") {
            in_evidence = true;
            let rest = rest.trim();
            match rest.strip_prefix(BULLETS) {
                Some(item) => (item.trim(), true),
                None => (rest, false),
            }
        } else {
            match line.strip_prefix(BULLETS) {
                Some(item) => (item.trim(), true),
                None => (line, false),
            }
        };
        let quoted_in_section = in_evidence && candidate.starts_with(QUOTES);
        if !bulleted && !quoted_in_section {
            continue;
        }
        match parse_evidence_line(candidate) {
            Some(evidence) => signal.evidence.push(evidence),
            None => signal.malformed_evidence.push(line.to_string()),
        }
    }
}

fn read_blocked_body(body: &str, signal: &mut CompletionSignal) {
    for line in body.lines() {
        let line = line.trim();
        if let Some(reason) = line.strip_prefix("REASON:") {
            let reason = reason.trim();
            if signal.blocked_reason.is_none() && !reason.is_empty() {
                signal.blocked_reason = Some(reason.to_string());
            }
        } else if let Some(need) = line.strip_prefix("NEED:") {
            let need = need.trim();
            if signal.blocked_need.is_none() && !need.is_empty() {
                signal.blocked_need = Some(need.to_string());
            }
        }
    }
    if signal.blocked_reason.is_none() {
        let whole = body.trim();
        if !whole.is_empty() {
            signal.blocked_reason = Some(whole.to_string());
        }
    }
}

/// Parses `"criterion" → path:START-END` (bullet already stripped).
fn parse_evidence_line(item: &str) -> Option<Evidence> {
    // The last arrow, because a criterion may itself contain one while a path never should.
    let (at, arrow_len) =
        ARROWS.iter().filter_map(|arrow| item.rfind(arrow).map(|at| (at, arrow.len()))).max_by_key(|&(at, _)| at)?;
    let criterion = unquote(item.get(..at)?.trim())?.trim();
    if criterion.is_empty() {
        return None;
    }
    let target = item.get(at + arrow_len..)?.trim();
    let target = target.strip_prefix('`').and_then(|t| t.strip_suffix('`')).unwrap_or(target).trim();
    let (path, lines) = target.rsplit_once(':')?;
    let path = path.trim();
    if path.is_empty() {
        return None;
    }
    let (line_start, line_end) = match lines.split_once(['-', '–']) {
        Some((start, end)) => (line_number(start)?, line_number(end)?),
        None => {
            let line = line_number(lines)?;
            (line, line)
        }
    };
    if line_start > line_end {
        return None;
    }
    Some(Evidence { criterion: criterion.to_string(), path: path.to_string(), line_start, line_end })
}

fn unquote(s: &str) -> Option<&str> {
    let mut chars = s.chars();
    let first = chars.next()?;
    let last = chars.next_back()?;
    (QUOTES.contains(&first) && QUOTES.contains(&last)).then_some(chars.as_str())
}

/// A 1-based line number; `u32::parse` alone would also take a leading `+`.
fn line_number(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n >= 1)
}

/// Checks each piece of evidence against the workspace as `line_count` reports it (the file's line
/// count, `None` when it does not exist). Returns each distinct problem once, in evidence order; an
/// empty list means every citation points at lines that exist. Paths that could not lie inside the
/// workspace count as missing and are never passed to `line_count`, so the runtime never reads them.
pub fn check_evidence(evidence: &[Evidence], line_count: impl Fn(&str) -> Option<u32>) -> Vec<EvidenceProblem> {
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    for item in evidence {
        let lines = if path_problem(&item.path).is_some() { None } else { line_count(&item.path) };
        let problem = match lines {
            None => EvidenceProblem::MissingFile { path: item.path.clone() },
            Some(lines) if item.line_end > lines => {
                EvidenceProblem::LineOutOfRange { path: item.path.clone(), line_end: item.line_end, lines }
            }
            Some(_) => continue,
        };
        if seen.insert(problem.clone()) {
            problems.push(problem);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(criterion: &str, path: &str, line_start: u32, line_end: u32) -> Evidence {
        Evidence { criterion: criterion.into(), path: path.into(), line_start, line_end }
    }

    #[test]
    fn well_formed_completion_is_claimed_with_evidence() {
        let response = "I did the work.\n<mt_complete>\nMT_ID: MT-001\nEVIDENCE:\n- \"criterion one\" → src/lib.rs:10-20\n- \"criterion two\" -> tests/a.rs:3\n</mt_complete>\n";
        let s = parse_completion_signal(response);
        assert!(s.claimed_complete);
        assert!(!s.blocked);
        assert_eq!(s.mt_id.as_deref(), Some("MT-001"));
        assert_eq!(
            s.evidence,
            vec![ev("criterion one", "src/lib.rs", 10, 20), ev("criterion two", "tests/a.rs", 3, 3)]
        );
        assert!(s.malformed_evidence.is_empty());
        let raw = s.raw_block.unwrap();
        assert!(raw.starts_with("<mt_complete>") && raw.ends_with("</mt_complete>"));
    }

    #[test]
    fn missing_closing_tag_is_not_a_claim() {
        let s = parse_completion_signal("<mt_complete>\nMT_ID: MT-001\nEVIDENCE:\n- \"c\" → src/lib.rs:1\n");
        assert_eq!(s, CompletionSignal::default());
        let s = parse_completion_signal("</mt_complete> then <mt_complete> MT_ID: X");
        assert!(!s.claimed_complete);
    }

    #[test]
    fn both_blocks_claim_and_block() {
        let s = parse_completion_signal(
            "<blocked>\nREASON: no db\nNEED: credentials\n</blocked>\n<mt_complete>\nMT_ID: MT-002\n</mt_complete>",
        );
        assert!(s.claimed_complete && s.blocked);
        assert_eq!(s.mt_id.as_deref(), Some("MT-002"));
        assert_eq!(s.blocked_reason.as_deref(), Some("no db"));
        assert_eq!(s.blocked_need.as_deref(), Some("credentials"));
        let raw = s.raw_block.unwrap();
        assert!(raw.starts_with("<blocked>") && raw.ends_with("</mt_complete>"));
    }

    #[test]
    fn all_arrows_and_quote_styles_are_accepted() {
        let s = parse_completion_signal(
            "<mt_complete>\nEVIDENCE:\n- \"a\" → x.rs:1\n- \"b\" -> x.rs:2-3\n  -   “c”   =>   `x.rs:4 - 5`  \n* ”d“ → x.rs:6\n\"e\" → x.rs:7\n</mt_complete>",
        );
        assert_eq!(
            s.evidence,
            vec![
                ev("a", "x.rs", 1, 1),
                ev("b", "x.rs", 2, 3),
                ev("c", "x.rs", 4, 5),
                ev("d", "x.rs", 6, 6),
                ev("e", "x.rs", 7, 7)
            ]
        );
        assert!(s.malformed_evidence.is_empty());
    }

    #[test]
    fn criterion_containing_an_arrow_keeps_it() {
        let s = parse_completion_signal("<mt_complete>\n- \"maps a -> b\" → src/map.rs:4\n</mt_complete>");
        assert_eq!(s.evidence, vec![ev("maps a -> b", "src/map.rs", 4, 4)]);
    }

    #[test]
    fn completion_without_evidence_is_still_claimed() {
        let s = parse_completion_signal("<mt_complete>\nMT_ID: MT-009\nEVIDENCE:\n</mt_complete>");
        assert!(s.claimed_complete);
        assert!(s.evidence.is_empty());
    }

    #[test]
    fn reason_and_need_are_extracted() {
        let s = parse_completion_signal("<blocked>\n  REASON:  the API key is missing \nNEED: an API key\n</blocked>");
        assert!(s.blocked && !s.claimed_complete);
        assert_eq!(s.blocked_reason.as_deref(), Some("the API key is missing"));
        assert_eq!(s.blocked_need.as_deref(), Some("an API key"));
    }

    #[test]
    fn reason_falls_back_to_the_whole_block() {
        let s = parse_completion_signal("<blocked>\n  The spec contradicts itself.\n  Ask the owner.\n</blocked>");
        assert_eq!(s.blocked_reason.as_deref(), Some("The spec contradicts itself.\n  Ask the owner."));
        assert_eq!(s.blocked_need, None);
        let s = parse_completion_signal("<blocked>REASON:\nNEED: x</blocked>");
        assert_eq!(s.blocked_reason.as_deref(), Some("REASON:\nNEED: x"));
        let s = parse_completion_signal("<blocked>  </blocked>");
        assert!(s.blocked);
        assert_eq!(s.blocked_reason, None);
    }

    #[test]
    fn malformed_evidence_is_recorded_not_kept() {
        let s = parse_completion_signal(
            "<mt_complete>\nEVIDENCE:\n- \"ok\" → a.rs:2\n- \"no arrow\" a.rs:1\n- unquoted → a.rs:1\n- \"no line\" → a.rs\n- \"zero\" → a.rs:0\n- \"reversed\" → a.rs:9-3\n- \"overflow\" → a.rs:99999999999\n- \"plus\" → a.rs:+4\n- \"\" → a.rs:1\n- \"no path\" → :3\nSome prose that is not evidence.\n</mt_complete>",
        );
        assert_eq!(s.evidence, vec![ev("ok", "a.rs", 2, 2)]);
        assert_eq!(s.malformed_evidence.len(), 9);
        assert_eq!(s.malformed_evidence[0], "- \"no arrow\" a.rs:1");
        assert!(!s.malformed_evidence.iter().any(|l| l.contains("prose")));
    }

    #[test]
    fn text_outside_the_tags_is_ignored() {
        let s = parse_completion_signal(
            "- \"outside\" → a.rs:1\n<mt_complete>\n- \"inside\" → b.rs:2\n</mt_complete>\n- \"after\" → c.rs:3\nMT_ID: MT-X\n<mt_complete>\n- \"second\" → d.rs:4\n</mt_complete>",
        );
        assert_eq!(s.evidence, vec![ev("inside", "b.rs", 2, 2)]);
        assert_eq!(s.mt_id, None);

        let s =
            parse_completion_signal("<blocked>\nREASON: stuck\n</blocked>\nLater I will send <mt_complete> when done.");
        assert!(s.blocked && !s.claimed_complete);
        assert!(s.evidence.is_empty());

        let s = parse_completion_signal("<MT_COMPLETE>\n- \"x\" → a.rs:1\n</MT_COMPLETE>");
        assert!(!s.claimed_complete);
    }

    #[test]
    fn nested_and_multibyte_input_does_not_confuse_the_parser() {
        let s =
            parse_completion_signal("<mt_complete><mt_complete>\n- “é→” → ré/ü.rs:1-2\n</mt_complete></mt_complete>");
        assert!(s.claimed_complete);
        assert_eq!(s.evidence, vec![ev("é→", "ré/ü.rs", 1, 2)]);
    }

    #[test]
    fn huge_input_is_handled() {
        let mut response = String::from("<mt_complete>\n");
        for i in 1..=50_000 {
            response.push_str(&format!("- \"c{i}\" → src/lib.rs:{i}-{}\n", i + 1));
        }
        response.push_str(&"é".repeat(1_000_000));
        response.push_str("</mt_complete>");
        let s = parse_completion_signal(&response);
        assert_eq!(s.evidence.len(), 50_000);
    }

    #[test]
    fn check_evidence_finds_missing_files_and_out_of_range_lines() {
        let evidence = vec![
            ev("a", "src/lib.rs", 1, 20),
            ev("b", "src/lib.rs", 15, 21),
            ev("c", "src/gone.rs", 1, 1),
            ev("d", "src/gone.rs", 2, 2),
            ev("e", "../outside.rs", 1, 1),
            ev("f", "/etc/passwd", 1, 1),
            ev("g", "./src/lib.rs", 20, 20),
        ];
        let problems = check_evidence(&evidence, |path| match path {
            "src/lib.rs" | "./src/lib.rs" => Some(20),
            "src/gone.rs" => None,
            other => panic!("line_count asked about {other}"),
        });
        assert_eq!(
            problems,
            vec![
                EvidenceProblem::LineOutOfRange { path: "src/lib.rs".into(), line_end: 21, lines: 20 },
                EvidenceProblem::MissingFile { path: "src/gone.rs".into() },
                EvidenceProblem::MissingFile { path: "../outside.rs".into() },
                EvidenceProblem::MissingFile { path: "/etc/passwd".into() },
            ]
        );
        assert_eq!(problems[0].to_string(), "evidence cites `src/lib.rs` line 21, but the file has 20 lines");
        assert_eq!(problems[1].to_string(), "evidence cites `src/gone.rs`, which does not exist");
        assert!(check_evidence(&evidence[..1], |_| Some(20)).is_empty());
        assert!(check_evidence(&[], |_| None).is_empty());
    }

    #[test]
    fn problems_serialize_with_a_kind() {
        let json = serde_json::to_value(EvidenceProblem::MissingFile { path: "a".into() }).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "missing_file", "path": "a"}));
    }

    use crate::fuzz::XorShift;

    const FRAGMENTS: &[&str] = &[
        "<mt_complete>",
        "</mt_complete>",
        "<blocked>",
        "</blocked>",
        "<mt_complete",
        "</blocked",
        "REASON:",
        "NEED:",
        "MT_ID:",
        "EVIDENCE:",
        "- \"",
        "\" → ",
        "” => ",
        "“",
        "->",
        "=>",
        "→",
        ":",
        "-",
        "–",
        "*",
        "`",
        "0",
        "1",
        "7",
        "42",
        "4294967295",
        "4294967296",
        "99999999999",
        "src/lib.rs",
        "é",
        "\u{0}",
        "\n",
        "\r\n",
        " ",
        "\t",
    ];

    fn soup(rng: &mut XorShift) -> String {
        let mut s = String::new();
        for _ in 0..rng.below(48) {
            if rng.below(6) == 0 {
                s.push(char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('\u{fffd}'));
            } else {
                s.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
        }
        s
    }

    const SEED: &str = "<mt_complete>\nMT_ID: MT-001\nEVIDENCE:\n- \"one\" → src/lib.rs:10-20\n- “two” -> a.rs:3\n</mt_complete>\n<blocked>\nREASON: r\nNEED: n\n</blocked>";

    /// Either fragment soup or a valid response with fragments spliced in at random character
    /// boundaries, since pure soup rarely forms a parseable evidence line.
    fn fuzz_input(rng: &mut XorShift) -> String {
        if rng.below(2) == 0 {
            return soup(rng);
        }
        let mut s = SEED.to_string();
        for _ in 0..rng.below(4) {
            let boundaries: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
            let at = boundaries[rng.below(boundaries.len())];
            if rng.below(3) == 0 {
                s.truncate(at);
            } else {
                let piece: String = soup(rng).chars().take(16).collect();
                s.insert_str(at, &piece);
            }
        }
        s
    }

    fn has_closed(text: &str, open: &str, close: &str) -> bool {
        text.find(open).is_some_and(|at| text[at + open.len()..].contains(close))
    }

    #[test]
    fn fuzz_never_panics_and_keeps_invariants() {
        let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
        let mut claimed = 0;
        let mut with_evidence = 0;
        for _ in 0..20_000 {
            let input = fuzz_input(&mut rng);
            let s = parse_completion_signal(&input);
            assert_eq!(s.claimed_complete, has_closed(&input, COMPLETE_OPEN, COMPLETE_CLOSE), "{input:?}");
            assert_eq!(s.blocked, has_closed(&input, BLOCKED_OPEN, BLOCKED_CLOSE), "{input:?}");
            assert_eq!(s.raw_block.is_some(), s.claimed_complete || s.blocked);
            if !s.claimed_complete {
                assert!(s.evidence.is_empty() && s.malformed_evidence.is_empty() && s.mt_id.is_none());
            }
            if !s.blocked {
                assert!(s.blocked_reason.is_none() && s.blocked_need.is_none());
            }
            for e in &s.evidence {
                assert!(1 <= e.line_start && e.line_start <= e.line_end, "{input:?}");
                assert!(!e.criterion.is_empty() && !e.path.is_empty());
            }
            let _ = check_evidence(&s.evidence, |p| Some(p.len() as u32));
            claimed += usize::from(s.claimed_complete);
            with_evidence += usize::from(!s.evidence.is_empty());
        }
        // Guards against a vocabulary that never exercises the interesting paths.
        assert!(claimed > 100, "{claimed}");
        assert!(with_evidence > 1_000, "{with_evidence}");
    }
}
