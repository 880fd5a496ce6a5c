//! Context compilation (§2.6.6.8.8): the token budget, the bounded retrieval of file contents, and
//! the prompt a model sees for one micro-task iteration, with the hashes that identify it.
//!
//! Everything here is a function of its input: the runtime reads the files, calls [`compile`], sends
//! [`PromptEnvelope::prompt`] and records [`PromptEnvelope::snapshot`], so the same input always gives
//! the same prompt and the same `context_snapshot_id`.

use std::cmp::Reverse;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use steward_core::sha256_hex;

use super::definition::{Expect, MicroTaskDefinition, Verification};

/// Tokens set aside for the SYSTEM RULES section.
pub const SYSTEM_RULES_TOKENS: u32 = 300;
/// Tokens set aside for the loop status.
pub const ITERATION_CONTEXT_TOKENS: u32 = 200;
/// Tokens set aside for the task's own definition.
pub const MT_DEFINITION_TOKENS: u32 = 500;
/// Tokens set aside for the previous iteration's outcome, from the second iteration on; also the
/// cap on what the PREVIOUS ITERATION section shows.
pub const PREVIOUS_OUTPUT_TOKENS: u32 = 200;
/// The most chunks retrieval picks over the whole task (`max_shadow_results`).
pub const MAX_SHADOW_RESULTS: usize = 10;
/// Lines shown on each side of a hit line (`neighbor_lines`).
pub const NEIGHBOR_LINES: u32 = 20;

/// The shortest identifier taken as a query term.
const MIN_TERM_LEN: usize = 3;
/// Keeps hit detection bounded when a previous error is long.
const MAX_QUERY_TERMS: usize = 64;
/// Most error locations listed for the previous iteration.
const MAX_ERROR_LOCATIONS: usize = 10;
/// The loop status line only needs enough of the error to recognise it; the full text has its own section.
const STATUS_ERROR_CHARS: usize = 160;

/// English words that would make almost every line a hit without saying anything about the task.
const STOPWORDS: &[&str] = &[
    "about", "after", "all", "also", "and", "any", "are", "be", "been", "before", "but", "can", "does", "each", "for",
    "from", "has", "have", "into", "its", "not", "only", "other", "should", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "through", "was", "were", "when", "where", "which",
    "while", "who", "will", "with", "would", "you", "your",
];

/// One file the task may see: its path and current content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSource {
    /// The relative path.
    pub path: String,
    /// The current content; `None` when the file does not exist yet.
    pub content: Option<String>,
}

/// The previous iteration at this task, as the executor recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousIteration<'a> {
    /// The outcome line, e.g. `FAIL: validation failed`.
    pub outcome: &'a str,
    /// The error output that made it fail, if any.
    pub error: Option<&'a str>,
    /// A short summary of what the model did.
    pub output_summary: &'a str,
}

/// Everything one iteration's prompt is compiled from.
#[derive(Debug, Clone, Copy)]
pub struct CompileInput<'a> {
    /// The micro-task.
    pub mt: &'a MicroTaskDefinition,
    /// The work packet it belongs to.
    pub wp_id: &'a str,
    /// This iteration, from 1.
    pub iteration: u32,
    /// The iteration limit at this task.
    pub max_iterations: u32,
    /// The current escalation level, from 0.
    pub escalation_level: u32,
    /// The highest escalation level of the chain.
    pub max_escalation_level: u32,
    /// The model this prompt is sent to.
    pub model_id: &'a str,
    /// The LoRA adapter, if one is used.
    pub lora_id: Option<&'a str>,
    /// The previous iteration; `None` on the first iteration at this task.
    pub previous: Option<PreviousIteration<'a>>,
    /// Ids of the packet's completed micro-tasks.
    pub completed_mts: &'a [String],
    /// How many micro-tasks the packet has.
    pub total_mts: usize,
    /// The task's read and modify files, plus create files with `content: None`, in order.
    pub files: &'a [FileSource],
    /// What must not be touched, as the work packet says it.
    pub out_of_scope: &'a [String],
    /// The explanation of the change format (`edits::FORMAT_HELP`).
    pub format_help: &'a str,
}

/// How a prompt's token budget is split (§2.6.6.8.8, step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The task's whole budget.
    pub total: u32,
    /// SYSTEM RULES.
    pub system_rules: u32,
    /// The loop status.
    pub iteration_context: u32,
    /// The task definition.
    pub mt_definition: u32,
    /// The previous iteration's outcome; 0 on the first iteration.
    pub previous_output: u32,
    /// What is left for file contents.
    pub file_contents: u32,
}

/// Splits `token_budget`: the fixed shares first, the rest (never below 0) to file contents.
///
/// Only `file_contents` is enforced when compiling; the fixed shares are the reference
/// implementation's nominal sizes, recorded so a run shows what was planned.
pub fn allocate(token_budget: u32, iteration: u32) -> Budget {
    let previous_output = if iteration > 1 { PREVIOUS_OUTPUT_TOKENS } else { 0 };
    let fixed = SYSTEM_RULES_TOKENS + ITERATION_CONTEXT_TOKENS + MT_DEFINITION_TOKENS + previous_output;
    Budget {
        total: token_budget,
        system_rules: SYSTEM_RULES_TOKENS,
        iteration_context: ITERATION_CONTEXT_TOKENS,
        mt_definition: MT_DEFINITION_TOKENS,
        previous_output,
        file_contents: token_budget.saturating_sub(fixed),
    }
}

/// A rough token count: `ceil(chars / 4)`.
///
/// The real tokenizer belongs to the model runtime in another crate; this crate only needs an
/// estimate that is deterministic and errs on the generous side for code.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// A run of lines shown from one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The file.
    pub path: String,
    /// First line shown, from 1.
    pub start_line: u32,
    /// Last line shown, inclusive.
    pub end_line: u32,
    /// The lines as shown, each `{n:>5} | line` and ending with a newline.
    pub text: String,
    /// How many distinct query terms the lines contain.
    pub score: u32,
}

/// One file as the FILES section shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownFile {
    /// The file.
    pub path: String,
    /// Whether it exists; a file to be created does not.
    pub exists: bool,
    /// How many lines it has.
    pub total_lines: u32,
    /// Whether it is shown whole; otherwise `chunks` holds what fit, possibly nothing.
    pub whole: bool,
    /// What is shown, in line order.
    pub chunks: Vec<Chunk>,
}

/// What retrieval chose to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retrieval {
    /// The files in display order: writable files first, then read-only ones, each in input order.
    pub files: Vec<ShownFile>,
    /// One note per file not shown whole.
    pub truncations: Vec<String>,
    /// Estimated tokens the shown files take.
    pub tokens_used: u32,
}

/// One range of file lines in the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// The file.
    pub path: String,
    /// First line, from 1.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
    /// Estimated tokens of the lines as shown.
    pub tokens: u32,
}

/// What a run records about a compiled prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSnapshot {
    /// The first 32 hex characters of `full_prompt_hash`.
    pub context_snapshot_id: String,
    /// SHA-256 of the stable prefix, lowercase hex.
    pub stable_prefix_hash: String,
    /// SHA-256 of the variable suffix, lowercase hex.
    pub variable_suffix_hash: String,
    /// SHA-256 of the prompt, lowercase hex.
    pub full_prompt_hash: String,
    /// The budget it was compiled under.
    pub budget: Budget,
    /// The file lines shown.
    pub selections: Vec<Selection>,
    /// What was cut and why.
    pub truncations: Vec<String>,
    /// [`estimate_tokens`] of the prompt.
    pub estimated_tokens: u32,
}

/// A compiled prompt and its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptEnvelope {
    /// The prompt, sections in the order of §2.6.6.8.8.3.
    pub prompt: String,
    /// The sections that stay the same across iterations: SYSTEM RULES, YOUR TASK and COMPLETION
    /// PROTOCOL, joined by blank lines. They are not contiguous in `prompt`; the hash tells whether
    /// the task-level part of two prompts is the same.
    pub stable_prefix: String,
    /// The sections that change between iterations: the micro-task context with the loop status,
    /// FILES, and PREVIOUS ITERATION when present, joined by blank lines.
    pub variable_suffix: String,
    /// What a run records.
    pub snapshot: ContextSnapshot,
}

/// Compiles one iteration's prompt (§2.6.6.8.8).
pub fn compile(input: &CompileInput<'_>) -> PromptEnvelope {
    let mt = input.mt;
    let budget = allocate(mt.token_budget, input.iteration);
    let terms = query_terms(mt, input.previous.and_then(|p| p.error));
    let retrieval = retrieve(input.files, mt, &terms, budget.file_contents);
    let mut truncations = retrieval.truncations.clone();

    let system = system_rules_section(mt, input.out_of_scope);
    let context = context_section(input);
    let task = task_section(mt);
    let files = files_section(&retrieval);
    let previous = input.previous.map(|p| previous_section(&p, &mut truncations));
    let protocol = protocol_section(mt, input.format_help);

    let mut ordered: Vec<&str> = vec![&system, &context, &task, &files];
    ordered.extend(previous.as_deref());
    ordered.push(&protocol);
    let prompt = ordered.join("\n");

    let stable_prefix = [system.as_str(), task.as_str(), protocol.as_str()].join("\n");
    let mut variable: Vec<&str> = vec![&context, &files];
    variable.extend(previous.as_deref());
    let variable_suffix = variable.join("\n");

    let full_prompt_hash = sha256_hex(prompt.as_bytes());
    let selections = retrieval
        .files
        .iter()
        .flat_map(|f| &f.chunks)
        .map(|c| Selection {
            path: c.path.clone(),
            start_line: c.start_line,
            end_line: c.end_line,
            tokens: estimate_tokens(&c.text),
        })
        .collect();
    let snapshot = ContextSnapshot {
        context_snapshot_id: full_prompt_hash.chars().take(32).collect(),
        stable_prefix_hash: sha256_hex(stable_prefix.as_bytes()),
        variable_suffix_hash: sha256_hex(variable_suffix.as_bytes()),
        full_prompt_hash,
        budget,
        selections,
        truncations,
        estimated_tokens: estimate_tokens(&prompt),
    };
    PromptEnvelope { prompt, stable_prefix, variable_suffix, snapshot }
}

/// The terms retrieval looks for: identifiers (ASCII letters, digits and `_`, at least 3 long, not
/// starting with a digit, lowercased) from the task's scope, actions and done criteria, then from
/// the previous error; first occurrence order, without common English words, at most 64.
pub fn query_terms(mt: &MicroTaskDefinition, previous_error: Option<&str>) -> Vec<String> {
    let mut sources: Vec<&str> = vec![&mt.scope];
    sources.extend(mt.actions.iter().map(String::as_str));
    sources.extend(mt.done.iter().map(|d| d.description.as_str()));
    sources.extend(previous_error);
    let mut terms: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for source in sources {
        for word in source.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if terms.len() >= MAX_QUERY_TERMS {
                return terms;
            }
            let word = word.to_ascii_lowercase();
            let is_identifier = word.len() >= MIN_TERM_LEN && !word.starts_with(|c: char| c.is_ascii_digit());
            if is_identifier && !STOPWORDS.contains(&word.as_str()) && seen.insert(word.clone()) {
                terms.push(word);
            }
        }
    }
    terms
}

/// A file prepared for selection.
struct Prepared<'a> {
    path: &'a str,
    content: Option<&'a str>,
    lines: Vec<&'a str>,
    /// Tokens of each line as shown.
    line_tokens: Vec<u32>,
    /// Indices of the query terms each line contains.
    line_terms: Vec<Vec<usize>>,
    /// Which lines are already shown.
    shown: Vec<bool>,
    /// Picked windows, 1-based inclusive.
    windows: Vec<(u32, u32)>,
    whole: bool,
}

impl<'a> Prepared<'a> {
    fn new(source: &'a FileSource, terms: &[String]) -> Self {
        let content = source.content.as_deref();
        let lines: Vec<&str> = content.map(|c| c.lines().collect()).unwrap_or_default();
        let line_tokens = lines.iter().enumerate().map(|(i, l)| estimate_tokens(&numbered(i + 1, l))).collect();
        // Substring matching, so a term like `parse` also finds `parse_config`.
        let line_terms = lines
            .iter()
            .map(|l| {
                let lower = l.to_ascii_lowercase();
                terms.iter().enumerate().filter(|(_, t)| lower.contains(t.as_str())).map(|(i, _)| i).collect()
            })
            .collect();
        let shown = vec![false; lines.len()];
        Prepared {
            path: &source.path,
            content,
            lines,
            line_tokens,
            line_terms,
            shown,
            windows: Vec::new(),
            whole: false,
        }
    }

    fn len(&self) -> u32 {
        to_u32(self.lines.len())
    }

    /// Distinct terms in lines `start..=end`.
    fn score(&self, start: u32, end: u32, term_count: usize) -> u32 {
        let mut present = vec![false; term_count];
        for terms in self.line_terms.iter().take(end as usize).skip(start.saturating_sub(1) as usize) {
            for &t in terms {
                if let Some(p) = present.get_mut(t) {
                    *p = true;
                }
            }
        }
        to_u32(present.iter().filter(|p| **p).count())
    }

    /// Tokens that showing lines `start..=end` adds: lines not shown yet, plus a header.
    fn cost(&self, start: u32, end: u32) -> u32 {
        let new_lines: u32 = (start..=end)
            .filter(|&n| !self.is_shown(n))
            .filter_map(|n| self.line_tokens.get(index(n)?))
            .fold(0u32, |acc, t| acc.saturating_add(*t));
        new_lines.saturating_add(estimate_tokens(&chunk_header(self.path, start, end, self.len())))
    }

    fn is_shown(&self, line: u32) -> bool {
        index(line).and_then(|i| self.shown.get(i)).copied().unwrap_or(false)
    }

    fn show(&mut self, start: u32, end: u32) {
        for n in start..=end {
            if let Some(s) = index(n).and_then(|i| self.shown.get_mut(i)) {
                *s = true;
            }
        }
        self.windows.push((start, end));
    }

    fn whole_cost(&self) -> u32 {
        if self.lines.is_empty() {
            return estimate_tokens(&empty_file_header(self.path));
        }
        self.cost(1, self.len())
    }

    fn chunk(&self, start: u32, end: u32, term_count: usize) -> Chunk {
        let text: String =
            (start..=end).filter_map(|n| self.lines.get(index(n)?).map(|l| numbered(n as usize, l))).collect();
        Chunk {
            path: self.path.to_string(),
            start_line: start,
            end_line: end,
            text,
            score: self.score(start, end, term_count),
        }
    }

    fn shown_file(&self, whole: bool, chunks: Vec<Chunk>) -> ShownFile {
        ShownFile {
            path: self.path.to_string(),
            exists: self.content.is_some(),
            total_lines: self.len(),
            whole,
            chunks,
        }
    }
}

/// A window around a hit line, before selection.
struct Candidate {
    file: usize,
    hit: u32,
    start: u32,
    end: u32,
    score: u32,
}

/// Chooses what of `files` to show within `file_budget` tokens (§2.6.6.8.8, step 6).
///
/// Writable files (`modify` and `create`) are handled before read-only ones, so they win when the
/// budget is tight. Within each group, a file that fits whole in what is left is shown whole; the
/// others are searched: every line containing a query term is a hit, with a window of
/// [`NEIGHBOR_LINES`] lines on each side scored by the distinct terms it holds. Windows are taken by
/// score (highest first), then path, then start line, skipping hits already shown, at most
/// [`MAX_SHADOW_RESULTS`] over the whole task, until the budget is used up; the last window is narrowed
/// to fit if needed. Overlapping windows of a file are merged. A searched file without hits offers
/// its first lines instead. Files are taken once, by the first entry with a given path.
pub fn retrieve(files: &[FileSource], mt: &MicroTaskDefinition, terms: &[String], file_budget: u32) -> Retrieval {
    let mut seen: HashSet<&str> = HashSet::new();
    let unique: Vec<&FileSource> = files.iter().filter(|f| seen.insert(f.path.as_str())).collect();
    let is_writable = |path: &str| mt.writable().any(|w| w == path);
    let (writable, read_only): (Vec<&FileSource>, Vec<&FileSource>) =
        unique.into_iter().partition(|f| is_writable(&f.path));
    let mut prepared: Vec<Prepared<'_>> =
        writable.into_iter().chain(read_only).map(|f| Prepared::new(f, terms)).collect();
    let tier_of: Vec<bool> = prepared.iter().map(|p| is_writable(p.path)).collect();

    let mut remaining = file_budget;
    let mut results_left = MAX_SHADOW_RESULTS;
    let mut budget_exhausted = false;
    for tier in [true, false] {
        let members: Vec<usize> = (0..prepared.len()).filter(|&i| tier_of.get(i) == Some(&tier)).collect();
        let mut searched: Vec<usize> = Vec::new();
        for &i in &members {
            let Some(p) = prepared.get_mut(i) else { continue };
            if p.content.is_none() {
                remaining = remaining.saturating_sub(estimate_tokens(&new_file_header(p.path)));
                continue;
            }
            let cost = p.whole_cost();
            if cost <= remaining {
                remaining -= cost;
                p.whole = true;
            } else {
                searched.push(i);
            }
        }
        if budget_exhausted {
            continue;
        }
        let mut candidates = candidates(&prepared, &searched, terms.len());
        candidates.sort_by(|a, b| {
            let path = |c: &Candidate| prepared.get(c.file).map(|p| p.path).unwrap_or_default();
            Reverse(a.score)
                .cmp(&Reverse(b.score))
                .then_with(|| path(a).cmp(path(b)))
                .then(a.start.cmp(&b.start))
                .then(a.hit.cmp(&b.hit))
        });
        for c in candidates {
            if results_left == 0 {
                break;
            }
            let Some(p) = prepared.get_mut(c.file) else { continue };
            if p.is_shown(c.hit) {
                continue;
            }
            let cost = p.cost(c.start, c.end);
            if cost <= remaining {
                remaining -= cost;
                p.show(c.start, c.end);
                results_left -= 1;
                continue;
            }
            // The best remaining window does not fit: show as much of it around the hit as fits, then stop.
            budget_exhausted = true;
            let len = p.len();
            let narrowed = (0..NEIGHBOR_LINES)
                .rev()
                .map(|r| (c.hit.saturating_sub(r).max(1), c.hit.saturating_add(r).min(len)))
                .find(|&(s, e)| p.cost(s, e) <= remaining);
            if let Some((s, e)) = narrowed {
                remaining -= p.cost(s, e);
                p.show(s, e);
                results_left -= 1;
            }
            break;
        }
    }

    let mut shown_files = Vec::new();
    let mut truncations = Vec::new();
    let term_count = terms.len();
    for p in &prepared {
        if p.content.is_none() {
            shown_files.push(p.shown_file(false, Vec::new()));
            continue;
        }
        if p.whole {
            let chunks = if p.lines.is_empty() { Vec::new() } else { vec![p.chunk(1, p.len(), term_count)] };
            shown_files.push(p.shown_file(true, chunks));
            continue;
        }
        let chunks: Vec<Chunk> = merge(&p.windows).into_iter().map(|(s, e)| p.chunk(s, e, term_count)).collect();
        truncations.push(if chunks.is_empty() {
            let why =
                if results_left == 0 && !budget_exhausted { "result limit reached" } else { "file budget used up" };
            format!("{}: {} lines, not shown ({why})", p.path, p.len())
        } else {
            let ranges: Vec<String> = chunks.iter().map(|c| format!("{}-{}", c.start_line, c.end_line)).collect();
            format!(
                "{}: {} lines, {} chunks of {MAX_SHADOW_RESULTS} shown (lines {})",
                p.path,
                p.len(),
                chunks.len(),
                ranges.join(", ")
            )
        });
        shown_files.push(p.shown_file(false, chunks));
    }
    Retrieval { files: shown_files, truncations, tokens_used: file_budget.saturating_sub(remaining) }
}

/// Every hit window of the searched files; a file without hits offers its opening lines.
fn candidates(prepared: &[Prepared<'_>], searched: &[usize], term_count: usize) -> Vec<Candidate> {
    let mut out = Vec::new();
    for &file in searched {
        let Some(p) = prepared.get(file) else { continue };
        let len = p.len();
        if len == 0 {
            continue;
        }
        let window =
            |hit: u32| (hit.saturating_sub(NEIGHBOR_LINES).max(1), hit.saturating_add(NEIGHBOR_LINES).min(len));
        let hits: Vec<u32> =
            p.line_terms.iter().enumerate().filter(|(_, t)| !t.is_empty()).map(|(i, _)| to_u32(i + 1)).collect();
        if hits.is_empty() {
            let end = (2 * NEIGHBOR_LINES + 1).min(len);
            out.push(Candidate { file, hit: 1, start: 1, end, score: 0 });
            continue;
        }
        for hit in hits {
            let (start, end) = window(hit);
            out.push(Candidate { file, hit, start, end, score: p.score(start, end, term_count) });
        }
    }
    out
}

/// Merges overlapping or touching windows, in line order.
fn merge(windows: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut sorted = windows.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn numbered(n: usize, line: &str) -> String {
    format!("{n:>5} | {line}\n")
}

fn chunk_header(path: &str, start: u32, end: u32, total: u32) -> String {
    format!("### {path} (lines {start}-{end} of {total})\n```\n```\n")
}

fn empty_file_header(path: &str) -> String {
    format!("### {path} (empty file)\n")
}

fn new_file_header(path: &str) -> String {
    format!("### {path} (new file, does not exist yet)\n")
}

/// The 0-based index of a 1-based line number.
fn index(line: u32) -> Option<usize> {
    (line as usize).checked_sub(1)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A fence longer than any backtick run in `text`, so file contents cannot close it early.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn render_file(file: &ShownFile) -> String {
    if !file.exists {
        return new_file_header(&file.path);
    }
    if file.whole && file.total_lines == 0 {
        return empty_file_header(&file.path);
    }
    let mut out = String::new();
    for (i, chunk) in file.chunks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let fence = fence_for(&chunk.text);
        out.push_str(&format!(
            "### {} (lines {}-{} of {})\n{fence}\n{}{fence}\n",
            file.path, chunk.start_line, chunk.end_line, file.total_lines, chunk.text
        ));
    }
    out
}

fn code_list(items: &[&str], empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}

fn system_rules_section(mt: &MicroTaskDefinition, out_of_scope: &[String]) -> String {
    let writable: Vec<&str> = mt.writable().map(String::as_str).collect();
    let never: Vec<&str> = out_of_scope.iter().map(String::as_str).collect();
    format!(
        "## SYSTEM RULES
You are completing one micro-task of a larger work packet. Follow these rules exactly.

Safety:
- Change only what this micro-task needs. Do not add code that reads secrets or credentials, opens network connections or deletes data unless the task asks for it.
- Do not weaken, skip or delete tests, checks or verification commands to make them pass.

Scope:
- Only these files may be written: {writable}.
- Never touch: {never}.
- A change to any other path is refused, and every change in your answer is discarded with it.

Execution:
- You cannot run commands. After you answer, the executor applies your changes and runs the verification commands.

Completion:
- Never emit <mt_complete> unless all of these hold:
  - every done criterion has file:line evidence in the files as they will be after your changes;
  - no TODO, FIXME or placeholder values (\"xxx\", \"TBD\", \"implement me\") remain in what you wrote;
  - the code is actually written in the files, not only described;
  - the verification commands would pass.
- Every completion claim is checked; a false one costs an iteration.
- If you cannot make progress, answer with <blocked> instead of guessing.
",
        writable = code_list(&writable, "none (this task may not write files)"),
        never = code_list(&never, "nothing listed"),
    )
}

fn context_section(input: &CompileInput<'_>) -> String {
    let mt = input.mt;
    let mut out = format!("## MICRO-TASK CONTEXT\n**Work Packet:** {}\n\n## MICRO-TASK LOOP STATUS\n", input.wp_id);
    out.push_str(&format!("**Loop:** Iteration {} of {}\n", input.iteration, input.max_iterations));
    out.push_str(&format!("**MT:** {} - {}\n", mt.mt_id, mt.name));
    out.push_str(&format!("**Model:** {} + LoRA: {}\n", input.model_id, input.lora_id.unwrap_or("none")));
    out.push_str(&format!("**Escalation Level:** {} of {}\n", input.escalation_level, input.max_escalation_level));
    out.push_str(&format!("**Previous Outcome:** {}\n", input.previous.map_or("FIRST_ATTEMPT", |p| p.outcome)));
    if let Some(error) = input.previous.and_then(|p| p.error) {
        let first = error.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        let (first, cut) = truncate_chars(first, STATUS_ERROR_CHARS);
        let ellipsis = if cut { " ..." } else { "" };
        out.push_str(&format!("**Previous Error:** {first}{ellipsis}\n"));
    }
    out.push_str(&format!("**Overall Progress:** {} of {} MTs complete\n", input.completed_mts.len(), input.total_mts));
    let completed = if input.completed_mts.is_empty() { "none".to_string() } else { input.completed_mts.join(", ") };
    out.push_str(&format!("**Completed MTs:** {completed}\n"));
    out
}

fn expect_text(expect: Expect, pattern: Option<&str>) -> String {
    match (expect, pattern) {
        (Expect::Contains | Expect::NotContains, Some(p)) => format!("{} \"{p}\"", expect.as_str()),
        _ => expect.as_str().to_string(),
    }
}

fn task_section(mt: &MicroTaskDefinition) -> String {
    let mut out = format!("## YOUR TASK\n### Scope\n{}\n\n### Actions (in order)\n", mt.scope.trim_end());
    for (i, action) in mt.actions.iter().enumerate() {
        out.push_str(&format!("{}. {action}\n", i + 1));
    }
    out.push_str("\n### Done Criteria\n");
    for criterion in &mt.done {
        let how = match (criterion.verification, criterion.verify_ref.and_then(|r| mt.verify.get(r))) {
            (Verification::Automated, Some(v)) => format!("verified by: `{}`", v.command),
            (Verification::Automated, None) => "verified automatically".to_string(),
            (Verification::EvidenceRequired, _) => "evidence required: cite file:line".to_string(),
        };
        out.push_str(&format!("- [ ] {} ({how})\n", criterion.description));
    }
    out.push_str("\n### Verification Commands\n");
    for v in &mt.verify {
        out.push_str(&format!(
            "- `{}` (expect: {}, blocking: {})\n",
            v.command,
            expect_text(v.expect, v.pattern.as_deref()),
            v.blocking
        ));
    }
    if let Some(notes) = mt.notes.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        out.push_str(&format!("\n### Notes\n{notes}\n"));
    }
    out
}

fn files_section(retrieval: &Retrieval) -> String {
    let mut out = String::from("## FILES\n");
    if retrieval.files.is_empty() {
        out.push_str("(no files)\n");
        return out;
    }
    out.push_str("Line numbers are for reference and evidence only; they are not part of the files.\n");
    for file in &retrieval.files {
        out.push('\n');
        out.push_str(&render_file(file));
    }
    if !retrieval.truncations.is_empty() {
        // Replacing a partly shown file whole would drop the lines the model never saw.
        out.push_str("\nShown in part (change these with <edit> blocks, not whole-file <file> blocks):\n");
        for note in &retrieval.truncations {
            out.push_str(&format!("- {note}\n"));
        }
    }
    out
}

/// GenerateMTSummary for a retry: what the previous attempt's answer did, in a line or two for
/// the next prompt. Which files it changed and how, whether it claimed completion or said it was
/// blocked, and the start of what it said besides its change and signal blocks. (Why it failed
/// travels beside it, as the previous iteration's error.)
pub fn summarize_answer(answer: &str) -> String {
    let mut parts = Vec::new();
    match crate::edits::parse_changes(answer) {
        Ok(changes) if changes.is_empty() => parts.push("It changed no file.".to_owned()),
        Ok(changes) => {
            let mut files: Vec<String> = Vec::new();
            for c in &changes {
                let (path, how) = match c {
                    crate::edits::Change::WholeFile { path, .. } => (path, "rewrote"),
                    crate::edits::Change::SearchReplace { path, .. } => (path, "edited"),
                };
                let line = format!("{how} `{path}`");
                if !files.contains(&line) {
                    files.push(line);
                }
            }
            parts.push(format!("It {}.", files.join(", ")));
        }
        Err(e) => parts.push(format!("Its change blocks could not be read ({e}).")),
    }
    let signal = crate::signal::parse_completion_signal(answer);
    if signal.claimed_complete {
        parts.push("It claimed the task complete.".to_owned());
    } else if signal.blocked {
        let why = signal.blocked_reason.as_deref().unwrap_or("no reason given");
        parts.push(format!("It said it was blocked: {why}."));
    } else {
        parts.push("It did not claim completion.".to_owned());
    }
    let prose = without_blocks(answer);
    let prose = prose.split_whitespace().collect::<Vec<_>>().join(" ");
    if !prose.is_empty() {
        let (shown, cut) = truncate_chars(&prose, 240);
        parts.push(format!("It said: \"{shown}{}\"", if cut { " ..." } else { "" }));
    }
    parts.join(" ")
}

/// `text` without its `<file>`, `<edit>`, `<mt_complete>` and `<blocked>` blocks.
fn without_blocks(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let next = ["<file", "<edit", "<mt_complete>", "<blocked>"]
            .iter()
            .filter_map(|open| rest.find(open).map(|at| (at, *open)))
            .min_by_key(|(at, _)| *at);
        let Some((at, open)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let tag = open.trim_start_matches('<').trim_end_matches('>');
        let close = format!("</{tag}>");
        match rest[at..].find(&close) {
            Some(end) => rest = &rest[at + end + close.len()..],
            None => return out,
        }
    }
}

/// Cuts `text` to at most `max` characters; says whether it cut.
fn truncate_chars(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (text.get(..at).unwrap_or(text), true),
        None => (text, false),
    }
}

fn previous_section(previous: &PreviousIteration<'_>, truncations: &mut Vec<String>) -> String {
    let total_chars = PREVIOUS_OUTPUT_TOKENS as usize * 4;
    let summary = previous.output_summary.trim();
    let error = previous.error.map(str::trim).filter(|e| !e.is_empty());
    // The error says what to fix, so it gets the larger share when both are present.
    let summary_cap = if error.is_some() { total_chars / 4 } else { total_chars };
    let (summary_shown, summary_cut) = truncate_chars(summary, summary_cap);
    if summary_cut {
        truncations
            .push(format!("previous iteration: summary cut to {summary_cap} of {} chars", summary.chars().count()));
    }
    let summary_text = if summary_shown.is_empty() { "(none)" } else { summary_shown };
    let mut out =
        format!("## PREVIOUS ITERATION\n**Summary:** {summary_text}{}\n", if summary_cut { " ..." } else { "" });
    if let Some(error) = error {
        let error_cap = total_chars - summary_shown.chars().count();
        let (shown, cut) = truncate_chars(error, error_cap);
        if cut {
            truncations
                .push(format!("previous iteration: error cut to {error_cap} of {} chars", error.chars().count()));
        }
        let body = if cut { format!("{shown}\n... (truncated)") } else { shown.to_string() };
        let fence = fence_for(&body);
        out.push_str(&format!("**Error:**\n{fence}text\n{body}\n{fence}\n"));
        let locations = error_locations(error);
        if !locations.is_empty() {
            out.push_str(&format!("**Error locations:** {}\n", locations.join(", ")));
        }
    }
    out
}

/// `path:line` references in an error, in order, without duplicates: a path is a run of letters,
/// digits, `_`, `-`, `.` and `/` holding a `.` or `/`, right before `:` and a line number.
fn error_locations(error: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    let mut out: Vec<String> = Vec::new();
    for (colon, _) in error.match_indices(':') {
        let Some(before) = error.get(..colon) else { continue };
        let Some(after) = error.get(colon + 1..) else { continue };
        let path_start =
            before.char_indices().rev().find(|&(_, c)| !is_path_char(c)).map_or(0, |(i, c)| i + c.len_utf8());
        let path = before.get(path_start..).unwrap_or("");
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let plausible = path.contains(['.', '/'])
            && path.starts_with(|c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/'))
            && !path.contains("//")
            && path.chars().any(|c| c.is_ascii_alphabetic());
        if !plausible || digits.is_empty() || digits.trim_start_matches('0').is_empty() {
            continue;
        }
        let location = format!("{path}:{digits}");
        if !out.contains(&location) {
            out.push(location);
            if out.len() >= MAX_ERROR_LOCATIONS {
                break;
            }
        }
    }
    out
}

fn protocol_section(mt: &MicroTaskDefinition, format_help: &str) -> String {
    let mut out = format!("## COMPLETION PROTOCOL\n{}\n\n", format_help.trim_end());
    out.push_str(
        "When every done criterion holds, end your answer with this block, one evidence line per criterion:\n",
    );
    out.push_str(&format!("<mt_complete>\nMT_ID: {}\nEVIDENCE:\n", mt.mt_id));
    for criterion in &mt.done {
        out.push_str(&format!("- \"{}\" → path:start-end\n", criterion.description));
    }
    out.push_str("</mt_complete>\n\n");
    out.push_str("If you cannot continue, answer with this block instead:\n");
    out.push_str("<blocked>\nREASON: why the task cannot be completed\nNEED: what would unblock it\n</blocked>\n\n");
    out.push_str("BEGIN WORK:\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{DoneCriterion, ExecutionTier, FileAccess, RiskLevel, VerifySpec};

    const HELP: &str = "Send changes as <file> or <edit> blocks.";

    fn mt() -> MicroTaskDefinition {
        MicroTaskDefinition {
            mt_id: "MT-001".into(),
            name: "Add checksum".into(),
            scope: "Add checksum validation to parse_header.".into(),
            files: FileAccess { read: vec!["src/types.rs".into()], modify: vec!["src/lib.rs".into()], create: vec![] },
            actions: vec!["Compute the checksum in parse_header".into(), "Return HeaderError on mismatch".into()],
            verify: vec![VerifySpec {
                command: "cargo test -q".into(),
                expect: Expect::Exit0,
                pattern: None,
                timeout_ms: 30_000,
                blocking: true,
            }],
            done: vec![
                DoneCriterion {
                    description: "Tests pass".into(),
                    verification: Verification::Automated,
                    verify_ref: Some(0),
                },
                DoneCriterion {
                    description: "parse_header rejects a bad checksum".into(),
                    verification: Verification::EvidenceRequired,
                    verify_ref: None,
                },
            ],
            depends_on: vec![],
            token_budget: 4096,
            execution_tier: ExecutionTier::LocalSmall,
            allowed_tools: vec![],
            retry_budget: 2,
            escalation_target: None,
            expected_output: None,
            task_tags: vec![],
            risk_level: RiskLevel::Low,
            notes: None,
        }
    }

    fn file(path: &str, content: &str) -> FileSource {
        FileSource { path: path.into(), content: Some(content.into()) }
    }

    fn small_files() -> Vec<FileSource> {
        vec![
            file("src/types.rs", "pub struct Header;\n"),
            file("src/lib.rs", "pub fn parse_header(b: &[u8]) -> Header {\n    todo!()\n}\n"),
        ]
    }

    fn input<'a>(mt: &'a MicroTaskDefinition, files: &'a [FileSource], done: &'a [String]) -> CompileInput<'a> {
        CompileInput {
            mt,
            wp_id: "WP-7",
            iteration: 1,
            max_iterations: 5,
            escalation_level: 0,
            max_escalation_level: 2,
            model_id: "qwen2.5-coder:7b",
            lora_id: None,
            previous: None,
            completed_mts: done,
            total_mts: 3,
            files,
            out_of_scope: &[],
            format_help: HELP,
        }
    }

    /// 2000 filler lines; the task's terms appear only on the given lines.
    fn big_file(hits: &[(usize, &str)]) -> String {
        (1..=2000)
            .map(|n| match hits.iter().find(|(at, _)| *at == n) {
                Some((_, text)) => format!("{text}\n"),
                None => format!("    let filler_{n} = {n} + 1;\n"),
            })
            .collect()
    }

    #[test]
    fn budget_first_iteration() {
        let b = allocate(4096, 1);
        assert_eq!(
            b,
            Budget {
                total: 4096,
                system_rules: 300,
                iteration_context: 200,
                mt_definition: 500,
                previous_output: 0,
                file_contents: 3096
            }
        );
    }

    #[test]
    fn budget_retry_reserves_previous_output() {
        let b = allocate(4096, 2);
        assert_eq!(b.previous_output, 200);
        assert_eq!(b.file_contents, 2896);
    }

    #[test]
    fn budget_tiny_saturates_at_zero() {
        assert_eq!(allocate(512, 3).file_contents, 0);
        assert_eq!(allocate(1000, 1).file_contents, 0);
        assert_eq!(allocate(1001, 1).file_contents, 1);
    }

    #[test]
    fn estimate_is_ceil_chars_over_four() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("→→→→"), 1);
    }

    #[test]
    fn hashes_are_lowercase_sha256() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn identical_inputs_give_identical_prompts_and_hashes() {
        let (m, files) = (mt(), small_files());
        let a = compile(&input(&m, &files, &[]));
        let b = compile(&input(&m, &files, &[]));
        assert_eq!(a, b);
        let s = &a.snapshot;
        assert_eq!(s.full_prompt_hash, sha256_hex(a.prompt.as_bytes()));
        assert_eq!(s.stable_prefix_hash, sha256_hex(a.stable_prefix.as_bytes()));
        assert_eq!(s.variable_suffix_hash, sha256_hex(a.variable_suffix.as_bytes()));
        assert_eq!(s.context_snapshot_id, s.full_prompt_hash[..32]);
        assert_eq!(s.estimated_tokens, estimate_tokens(&a.prompt));
        assert_eq!(s.selections.len(), 2);
    }

    #[test]
    fn iteration_changes_the_variable_suffix_only() {
        let (m, files) = (mt(), small_files());
        let first = compile(&input(&m, &files, &[]));
        let second = compile(&CompileInput { iteration: 2, ..input(&m, &files, &[]) });
        assert_eq!(first.snapshot.stable_prefix_hash, second.snapshot.stable_prefix_hash);
        assert_ne!(first.snapshot.variable_suffix_hash, second.snapshot.variable_suffix_hash);
        assert_ne!(first.snapshot.full_prompt_hash, second.snapshot.full_prompt_hash);
        assert_ne!(first.snapshot.context_snapshot_id, second.snapshot.context_snapshot_id);
    }

    #[test]
    fn sections_come_in_order() {
        let (m, files) = (mt(), small_files());
        let done = vec!["MT-000".to_string()];
        let previous = PreviousIteration {
            outcome: "FAIL: validation failed",
            error: Some("error[E0308]: mismatched types\n --> src/lib.rs:2:5"),
            output_summary: "Edited src/lib.rs",
        };
        let env = compile(&CompileInput { iteration: 2, previous: Some(previous), ..input(&m, &files, &done) });
        let headers = [
            "## SYSTEM RULES",
            "## MICRO-TASK CONTEXT",
            "## MICRO-TASK LOOP STATUS",
            "**Loop:** Iteration 2 of 5",
            "**MT:** MT-001 - Add checksum",
            "**Model:** qwen2.5-coder:7b + LoRA: none",
            "**Escalation Level:** 0 of 2",
            "**Previous Outcome:** FAIL: validation failed",
            "**Previous Error:** error[E0308]: mismatched types",
            "**Overall Progress:** 1 of 3 MTs complete",
            "**Completed MTs:** MT-000",
            "## YOUR TASK",
            "### Scope",
            "### Actions (in order)",
            "### Done Criteria",
            "### Verification Commands",
            "## FILES",
            "### src/lib.rs (lines 1-3 of 3)",
            "### src/types.rs (lines 1-1 of 1)",
            "## PREVIOUS ITERATION",
            "**Error locations:** src/lib.rs:2",
            "## COMPLETION PROTOCOL",
            HELP,
            "<mt_complete>",
            "<blocked>",
            "BEGIN WORK:",
        ];
        let mut from = 0;
        for header in headers {
            let at = env.prompt[from..].find(header).unwrap_or_else(|| panic!("{header} missing or out of order"));
            from += at + header.len();
        }
        assert!(env.prompt.ends_with("BEGIN WORK:\n"));
        assert!(!env.prompt.contains("### Notes"));
        assert!(env.stable_prefix.contains("## YOUR TASK") && env.stable_prefix.contains("## COMPLETION PROTOCOL"));
        assert!(!env.stable_prefix.contains("## FILES") && !env.stable_prefix.contains("LOOP STATUS"));
        assert!(env.variable_suffix.contains("## PREVIOUS ITERATION") && env.variable_suffix.contains("## FILES"));
    }

    #[test]
    fn first_attempt_has_no_previous_section() {
        let (m, files) = (mt(), small_files());
        let env = compile(&input(&m, &files, &[]));
        assert!(env.prompt.contains("**Previous Outcome:** FIRST_ATTEMPT\n"));
        assert!(!env.prompt.contains("**Previous Error:**"));
        assert!(!env.prompt.contains("## PREVIOUS ITERATION"));
    }

    #[test]
    fn big_file_is_searched_into_bounded_chunks() {
        let mut hits: Vec<(usize, String)> = (0..15).map(|i| (110 + i * 120, format!("    // step {i}"))).collect();
        hits.push((700, "fn parse_header(bytes: &[u8]) -> Result<Header, HeaderError> {".into()));
        hits.push((702, "    let checksum = validation(bytes);".into()));
        hits.push((1500, "    // checksum".into()));
        let hit_refs: Vec<(usize, &str)> = hits.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let m = MicroTaskDefinition { token_budget: 8192, ..mt() };
        let files = vec![file("src/lib.rs", &big_file(&hit_refs))];
        let env = compile(&input(&m, &files, &[]));

        let chunks = &env.snapshot.selections;
        assert!(!chunks.is_empty() && chunks.len() <= MAX_SHADOW_RESULTS);
        let covers = |line: u32| chunks.iter().any(|c| c.start_line <= line && line <= c.end_line);
        assert!(covers(700) && covers(702) && covers(1500));
        let around_parse = chunks.iter().find(|c| c.start_line <= 700 && 700 <= c.end_line).unwrap();
        // The windows around 700 and 702 score the same; the earlier start wins and covers 702 too.
        assert_eq!((around_parse.start_line, around_parse.end_line), (680, 720));
        assert!(env.prompt.contains("  700 | fn parse_header(bytes"));
        assert!(env.prompt.contains("  680 |     let filler_680"));
        let note = env.snapshot.truncations.iter().find(|t| t.starts_with("src/lib.rs: 2000 lines, ")).unwrap();
        assert!(note.contains(" chunks of 10 shown (lines "), "{note}");
        assert!(env.prompt.contains(&format!("- {note}")));
        assert!(
            env.prompt
                .contains("  720 |     let filler_720 = 720 + 1;\n```\n\n### src/lib.rs (lines 1480-1520 of 2000)\n")
        );
        let shown: u32 = chunks.iter().map(|c| c.tokens).sum();
        assert!(shown <= env.snapshot.budget.file_contents);
    }

    #[test]
    fn at_most_ten_results_over_the_whole_task() {
        let hit_lines: Vec<(usize, String)> = (0..30).map(|i| (30 + i * 60, "parse_header()".to_string())).collect();
        let refs: Vec<(usize, &str)> = hit_lines.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let files = vec![file("a.rs", &big_file(&refs)), file("b.rs", &big_file(&refs))];
        let m = mt();
        let terms = query_terms(&m, None);
        let r = retrieve(&files, &m, &terms, 10_000);
        assert!(r.files.iter().all(|f| !f.whole));
        let windows: usize = r.files.iter().map(|f| f.chunks.len()).sum();
        assert!(windows <= MAX_SHADOW_RESULTS);
        // Hits 60 lines apart never merge, so every result is its own chunk.
        assert_eq!(windows, MAX_SHADOW_RESULTS);
        assert!(r.files.iter().all(|f| f.chunks.iter().all(|c| c.end_line - c.start_line == 2 * NEIGHBOR_LINES)));
    }

    #[test]
    fn equal_scores_are_ordered_by_path() {
        let body = big_file(&[(500, "parse_header();")]);
        let files = vec![file("src/b.rs", &body), file("src/a.rs", &body)];
        let m = MicroTaskDefinition {
            files: FileAccess { read: vec!["src/b.rs".into(), "src/a.rs".into()], ..FileAccess::default() },
            ..mt()
        };
        let terms = query_terms(&m, None);
        let one_window = Prepared::new(&files[1], &terms).cost(480, 520);
        let r = retrieve(&files, &m, &terms, one_window + 2);
        let paths: Vec<&str> = r.files.iter().filter(|f| !f.chunks.is_empty()).map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["src/a.rs"]);
        assert_eq!((r.files[1].chunks[0].start_line, r.files[1].chunks[0].end_line), (480, 520));
        // Display keeps input order; the file left out says so.
        assert_eq!(r.files[0].path, "src/b.rs");
        assert_eq!(r.truncations[0], "src/b.rs: 2000 lines, not shown (file budget used up)");
        assert_eq!(r, retrieve(&files, &m, &terms, one_window + 2));
    }

    #[test]
    fn modify_files_win_when_the_budget_is_tight() {
        let body: String = (1..=60).map(|n| format!("let value_{n} = {n};\n")).collect();
        let files = vec![file("src/types.rs", &body), file("src/lib.rs", &body)];
        let m = mt();
        let terms = query_terms(&m, None);
        let whole = Prepared::new(&files[1], &terms).whole_cost();
        let r = retrieve(&files, &m, &terms, whole + whole / 2);
        assert_eq!(r.files[0].path, "src/lib.rs");
        assert!(r.files[0].whole);
        assert!(!r.files[1].whole);
        assert!(r.truncations.iter().any(|t| t.starts_with("src/types.rs: 60 lines")));
        assert!(r.tokens_used <= whole + whole / 2);
    }

    #[test]
    fn new_files_are_listed_without_content() {
        let m =
            MicroTaskDefinition { files: FileAccess { create: vec!["src/checksum.rs".into()], ..mt().files }, ..mt() };
        let mut files = small_files();
        files.push(FileSource { path: "src/checksum.rs".into(), content: None });
        let env = compile(&input(&m, &files, &[]));
        assert!(env.prompt.contains("### src/checksum.rs (new file, does not exist yet)\n"));
        assert!(env.prompt.contains("`src/lib.rs`, `src/checksum.rs`"));
        assert!(env.snapshot.selections.iter().all(|s| s.path != "src/checksum.rs"));
    }

    #[test]
    fn query_terms_are_lowercased_identifiers() {
        let m = MicroTaskDefinition {
            scope: "Fix the ParseHeader bug in v2 and 42x".into(),
            actions: vec!["fix parse_header".into()],
            done: vec![],
            ..mt()
        };
        assert_eq!(
            query_terms(&m, Some("E0308 at lib")),
            ["fix", "parseheader", "bug", "parse_header", "e0308", "lib"]
        );
    }

    #[test]
    fn error_locations_are_found() {
        let error = "error: x\n --> src/lib.rs:42:5\npanicked at tests/a.rs:7:1\nsrc/lib.rs:42 again\n\
                     at 12:30:45 see http://host.com:8080 and v1.2:0";
        assert_eq!(error_locations(error), ["src/lib.rs:42", "tests/a.rs:7"]);
    }

    #[test]
    fn previous_output_is_capped() {
        let (m, files) = (mt(), small_files());
        let long_error = "E".repeat(5000);
        let previous = PreviousIteration { outcome: "FAIL", error: Some(&long_error), output_summary: "did things" };
        let env = compile(&CompileInput { iteration: 2, previous: Some(previous), ..input(&m, &files, &[]) });
        let section = &env.prompt[env.prompt.find("## PREVIOUS ITERATION").unwrap()..];
        assert!(section.contains("... (truncated)"));
        assert!(env.snapshot.truncations.contains(&"previous iteration: error cut to 790 of 5000 chars".to_string()));
        assert!(section.find("## COMPLETION PROTOCOL").unwrap() < 1000);
    }

    #[test]
    fn fences_outlast_backticks_in_files() {
        let files = vec![file("src/lib.rs", "/// ```\n/// ````rust\nfn a() {}\n")];
        let (m, done) = (mt(), Vec::new());
        let env = compile(&input(&m, &files, &done));
        assert!(env.prompt.contains("### src/lib.rs (lines 1-3 of 3)\n`````\n    1 | /// ```\n"));
    }

    #[test]
    fn golden_prompt() {
        let mut m = mt();
        m.verify.push(VerifySpec {
            command: "cargo test -q header".into(),
            expect: Expect::Contains,
            pattern: Some("1 passed".into()),
            timeout_ms: 30_000,
            blocking: false,
        });
        m.done[1].verification = Verification::Automated;
        m.done[1].verify_ref = Some(1);
        m.notes = Some("Keep the public API unchanged.".into());
        let files = small_files();
        let done = vec!["MT-000".to_string()];
        let out = vec!["migrations/".to_string()];
        let previous = PreviousIteration {
            outcome: "FAIL: validation failed",
            error: Some("error[E0425]: cannot find value `sum` in this scope\n --> src/lib.rs:2:5"),
            output_summary: "Replaced the body of parse_header.",
        };
        let env = compile(&CompileInput {
            iteration: 2,
            escalation_level: 1,
            previous: Some(previous),
            out_of_scope: &out,
            lora_id: Some("rust-lora"),
            ..input(&m, &files, &done)
        });
        let expected = r##"## SYSTEM RULES
You are completing one micro-task of a larger work packet. Follow these rules exactly.

Safety:
- Change only what this micro-task needs. Do not add code that reads secrets or credentials, opens network connections or deletes data unless the task asks for it.
- Do not weaken, skip or delete tests, checks or verification commands to make them pass.

Scope:
- Only these files may be written: `src/lib.rs`.
- Never touch: `migrations/`.
- A change to any other path is refused, and every change in your answer is discarded with it.

Execution:
- You cannot run commands. After you answer, the executor applies your changes and runs the verification commands.

Completion:
- Never emit <mt_complete> unless all of these hold:
  - every done criterion has file:line evidence in the files as they will be after your changes;
  - no TODO, FIXME or placeholder values ("xxx", "TBD", "implement me") remain in what you wrote;
  - the code is actually written in the files, not only described;
  - the verification commands would pass.
- Every completion claim is checked; a false one costs an iteration.
- If you cannot make progress, answer with <blocked> instead of guessing.

## MICRO-TASK CONTEXT
**Work Packet:** WP-7

## MICRO-TASK LOOP STATUS
**Loop:** Iteration 2 of 5
**MT:** MT-001 - Add checksum
**Model:** qwen2.5-coder:7b + LoRA: rust-lora
**Escalation Level:** 1 of 2
**Previous Outcome:** FAIL: validation failed
**Previous Error:** error[E0425]: cannot find value `sum` in this scope
**Overall Progress:** 1 of 3 MTs complete
**Completed MTs:** MT-000

## YOUR TASK
### Scope
Add checksum validation to parse_header.

### Actions (in order)
1. Compute the checksum in parse_header
2. Return HeaderError on mismatch

### Done Criteria
- [ ] Tests pass (verified by: `cargo test -q`)
- [ ] parse_header rejects a bad checksum (verified by: `cargo test -q header`)

### Verification Commands
- `cargo test -q` (expect: exit_0, blocking: true)
- `cargo test -q header` (expect: contains "1 passed", blocking: false)

### Notes
Keep the public API unchanged.

## FILES
Line numbers are for reference and evidence only; they are not part of the files.

### src/lib.rs (lines 1-3 of 3)
```
    1 | pub fn parse_header(b: &[u8]) -> Header {
    2 |     todo!()
    3 | }
```

### src/types.rs (lines 1-1 of 1)
```
    1 | pub struct Header;
```

## PREVIOUS ITERATION
**Summary:** Replaced the body of parse_header.
**Error:**
```text
error[E0425]: cannot find value `sum` in this scope
 --> src/lib.rs:2:5
```
**Error locations:** src/lib.rs:2

## COMPLETION PROTOCOL
Send changes as <file> or <edit> blocks.

When every done criterion holds, end your answer with this block, one evidence line per criterion:
<mt_complete>
MT_ID: MT-001
EVIDENCE:
- "Tests pass" → path:start-end
- "parse_header rejects a bad checksum" → path:start-end
</mt_complete>

If you cannot continue, answer with this block instead:
<blocked>
REASON: why the task cannot be completed
NEED: what would unblock it
</blocked>

BEGIN WORK:
"##;
        assert_eq!(env.prompt, expected, "\n{}", env.prompt);
    }

    /// GenerateMTSummary: a retry's prompt says what the previous answer did, not "(none)".
    #[test]
    fn the_previous_answer_is_summarized_for_the_retry() {
        let answer = "I think the sign is wrong.\n<edit path=\"calc.py\">\n<search>\n-\n</search>\n<replace>\n+\n</replace>\n</edit>\n<mt_complete>\nMT_ID: MT-001\n</mt_complete>\n";
        assert_eq!(
            summarize_answer(answer),
            "It edited `calc.py`. It claimed the task complete. It said: \"I think the sign is wrong.\""
        );
        assert_eq!(
            summarize_answer("Looks fine to me."),
            "It changed no file. It did not claim completion. It said: \"Looks fine to me.\""
        );
        let blocked = "<blocked>\nREASON: the tests are missing\n</blocked>";
        assert_eq!(summarize_answer(blocked), "It changed no file. It said it was blocked: the tests are missing.");
        assert!(summarize_answer("<file path=\"a.py\">\nunclosed").starts_with("Its change blocks could not be read"));
    }
}
