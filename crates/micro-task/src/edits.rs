//! Proposed changes: the `<file>` and `<edit>` blocks a model writes files with, and the pure plan for
//! applying them atomically inside the micro-task's declared scope.
//!
//! Parsing and planning are separate so that the runtime can record what the model proposed even when
//! the plan is refused. Planning returns the complete set of writes or an error, never part of one: the
//! runtime writes only what an `Ok` plan lists.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use steward_core::relative_path::{self, strip_dot_slash};
use thiserror::Error;

/// How the prompt explains the two change formats to the model.
pub const FORMAT_HELP: &str = r#"To change files, use only the two formats below. Text outside them is ignored.

To create a file or replace one entirely, send its whole new content:
<file path="src/example.rs">
pub fn answer() -> u32 {
    42
}
</file>

To change part of an existing file, send a search/replace edit. The <search> text must appear exactly once in the file, character for character, and is replaced by the <replace> text. Several edits to one file apply in order.
<edit path="src/example.rs">
<search>
    42
</search>
<replace>
    43
</replace>
</edit>

Paths are relative to the repository root, in double quotes, with forward slashes. Only the files listed for this micro-task may be written: listed existing files may be modified and listed new files may be created. If any block is malformed, fails to apply, or names another path, none of the changes are applied."#;

/// One proposed change to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A `<file>` block: the file's entire new content.
    WholeFile {
        /// The `path` attribute, as written.
        path: String,
        /// The new content, ending with the newline before `</file>` when there is one.
        content: String,
    },
    /// An `<edit>` block: replace the one occurrence of `search` with `replace`.
    SearchReplace {
        /// The `path` attribute, as written.
        path: String,
        /// The exact text to find; never empty when parsed.
        search: String,
        /// The text to put in its place.
        replace: String,
    },
}

impl Change {
    /// The path the change targets, as written.
    pub fn path(&self) -> &str {
        match self {
            Self::WholeFile { path, .. } | Self::SearchReplace { path, .. } => path,
        }
    }
}

/// Why a response's change blocks could not be read. `block` counts `<file>` and `<edit>` blocks
/// together, from 1, in response order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EditParseError {
    /// The block or its opening tag never ends.
    #[error("block {block}: `<{tag}>` is not closed by `</{tag}>`")]
    Unclosed {
        /// 1-based block index.
        block: usize,
        /// `file` or `edit`.
        tag: &'static str,
    },
    /// The opening tag has no non-empty `path="..."` attribute.
    #[error("block {block}: `<{tag}>` needs a path=\"...\" attribute")]
    MissingPath {
        /// 1-based block index.
        block: usize,
        /// `file` or `edit`.
        tag: &'static str,
    },
    /// The opening tag's attributes could not be read.
    #[error("block {block}: malformed `<{tag}>` tag: {reason}")]
    BadOpeningTag {
        /// 1-based block index.
        block: usize,
        /// `file` or `edit`.
        tag: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The `<edit>` does not hold exactly one well-formed `<search>` and one `<replace>`.
    #[error("block {block}: malformed `<edit>`: {reason}")]
    BadEdit {
        /// 1-based block index.
        block: usize,
        /// What was wrong.
        reason: String,
    },
    /// The `<search>` text is empty or only whitespace, which cannot identify one place in a file.
    #[error("block {block}: the `<search>` text is empty")]
    EmptySearch {
        /// 1-based block index.
        block: usize,
    },
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Edit,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Edit => "edit",
        }
    }
}

/// Reads every `<file>` and `<edit>` block in `response`, in order. Text outside blocks is ignored;
/// a block that is present but malformed fails the whole response, because applying the rest would
/// leave the model's intended change half done.
pub fn parse_changes(response: &str) -> Result<Vec<Change>, EditParseError> {
    let mut changes = Vec::new();
    let mut pos = 0;
    while let Some((start, kind)) = next_opening(response, pos) {
        let block = changes.len() + 1;
        let tag = kind.tag();
        let (path, body_start) = read_opening_tag(response, start + 1 + tag.len(), block, tag)?;
        let close = format!("</{tag}>");
        let Some(len) = response.get(body_start..).and_then(|rest| rest.find(&close)) else {
            return Err(EditParseError::Unclosed { block, tag });
        };
        let body = response.get(body_start..body_start + len).unwrap_or_default();
        pos = body_start + len + close.len();
        changes.push(match kind {
            Kind::File => Change::WholeFile { path, content: strip_leading_newline(body).to_string() },
            Kind::Edit => read_edit_body(body, path, block)?,
        });
    }
    Ok(changes)
}

/// The next `<file` or `<edit` that starts a tag (followed by whitespace or `>`), at or after `pos`.
fn next_opening(text: &str, pos: usize) -> Option<(usize, Kind)> {
    let rest = text.get(pos..)?;
    rest.match_indices('<').find_map(|(at, _)| {
        let after = rest.get(at + 1..)?;
        let (kind, tail) = if let Some(tail) = after.strip_prefix("file") {
            (Kind::File, tail)
        } else {
            (Kind::Edit, after.strip_prefix("edit")?)
        };
        tail.starts_with(|c: char| c == '>' || c.is_whitespace()).then_some((pos + at, kind))
    })
}

/// Reads the attributes from just after the tag name to `>`; returns the path and where the body starts.
fn read_opening_tag(
    text: &str,
    from: usize,
    block: usize,
    tag: &'static str,
) -> Result<(String, usize), EditParseError> {
    let bad = |reason: String| EditParseError::BadOpeningTag { block, tag, reason };
    let mut rest = text.get(from..).unwrap_or_default();
    let mut path: Option<String> = None;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('>') {
            let path = path.filter(|p| !p.is_empty()).ok_or(EditParseError::MissingPath { block, tag })?;
            return Ok((path, text.len() - after.len()));
        }
        if rest.is_empty() {
            return Err(EditParseError::Unclosed { block, tag });
        }
        if rest.starts_with("/>") {
            return Err(bad("a self-closing tag has no content".into()));
        }
        let name_len = rest.find(|c: char| c == '=' || c == '>' || c.is_whitespace()).unwrap_or(rest.len());
        let name = rest.get(..name_len).unwrap_or_default();
        rest = rest.get(name_len..).unwrap_or_default().trim_start();
        let Some(value_part) = rest.strip_prefix('=') else {
            return Err(bad(format!("attribute `{name}` has no value")));
        };
        let Some(quoted) = value_part.trim_start().strip_prefix('"') else {
            return Err(bad(format!("the value of `{name}` must be in double quotes")));
        };
        let Some(end) = quoted.find('"') else {
            return Err(EditParseError::Unclosed { block, tag });
        };
        let value = quoted.get(..end).unwrap_or_default();
        rest = quoted.get(end + 1..).unwrap_or_default();
        if name == "path" {
            if path.is_some() {
                return Err(bad("more than one `path` attribute".into()));
            }
            path = Some(value.trim().to_string());
        }
    }
}

fn read_edit_body(body: &str, path: String, block: usize) -> Result<Change, EditParseError> {
    let bad = |reason: String| EditParseError::BadEdit { block, reason };
    let searches = body.matches("<search>").count();
    let replaces = body.matches("<replace>").count();
    if searches != 1 || replaces != 1 {
        return Err(bad(format!(
            "needs exactly one <search> and one <replace>, found {searches} <search> and {replaces} <replace>"
        )));
    }
    let (search, search_span) = read_part(body, "search").ok_or_else(|| bad("<search> is not closed".into()))?;
    let (replace, replace_span) = read_part(body, "replace").ok_or_else(|| bad("<replace> is not closed".into()))?;
    if search_span.0 < replace_span.1 && replace_span.0 < search_span.1 {
        return Err(bad("<search> and <replace> overlap".into()));
    }
    if search.trim().is_empty() {
        return Err(EditParseError::EmptySearch { block });
    }
    Ok(Change::SearchReplace { path, search: search.to_string(), replace: replace.to_string() })
}

/// The inner text of `<name>...</name>` with one newline stripped at each end, and the block's span.
fn read_part<'a>(body: &'a str, name: &str) -> Option<(&'a str, (usize, usize))> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)?;
    let inner_start = start + open.len();
    let len = body.get(inner_start..)?.find(&close)?;
    let inner = body.get(inner_start..inner_start + len)?;
    Some((strip_trailing_newline(strip_leading_newline(inner)), (start, inner_start + len + close.len())))
}

fn strip_leading_newline(s: &str) -> &str {
    s.strip_prefix("\r\n").or_else(|| s.strip_prefix('\n')).unwrap_or(s)
}

fn strip_trailing_newline(s: &str) -> &str {
    s.strip_suffix("\r\n").or_else(|| s.strip_suffix('\n')).unwrap_or(s)
}

/// One file the runtime should write, with its complete new content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    /// Workspace-relative path, with any leading `./` removed.
    pub path: String,
    /// The complete new content.
    pub content: String,
    /// The file did not exist before.
    pub created: bool,
}

/// Why a set of changes was refused. `block` is the 1-based index of the change in the list.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApplyError {
    /// The path is unsafe or not one the micro-task may write in this way.
    #[error("`{path}` is outside the micro-task's scope: {reason}")]
    ScopeViolation {
        /// The path as written.
        path: String,
        /// What made it out of scope.
        reason: String,
    },
    /// The search text does not occur in the file.
    #[error("block {block}: the <search> text does not occur in `{path}`")]
    SearchNotFound {
        /// The path.
        path: String,
        /// 1-based index of the change.
        block: usize,
    },
    /// The search text occurs more than once, so the place to change is unclear.
    #[error("block {block}: the <search> text occurs {count} times in `{path}`; it must occur exactly once")]
    AmbiguousSearch {
        /// The path.
        path: String,
        /// 1-based index of the change.
        block: usize,
        /// How many (possibly overlapping) occurrences there are.
        count: usize,
    },
    /// A search/replace edit targets a file that neither exists nor is created earlier in the response.
    #[error("block {block}: `{path}` does not exist, so it cannot be edited; send it whole in a <file> block")]
    MissingFile {
        /// The path.
        path: String,
        /// 1-based index of the change.
        block: usize,
    },
}

impl ApplyError {
    /// Whether the model tried to write outside its scope, which the policy treats more harshly than a
    /// failed edit.
    pub fn is_scope_violation(&self) -> bool {
        matches!(self, Self::ScopeViolation { .. })
    }

    /// `scope_violation` or `edit_failed`, for events and metrics.
    pub fn category(&self) -> &'static str {
        if self.is_scope_violation() { "scope_violation" } else { "edit_failed" }
    }
}

/// Plans applying `changes` atomically. `current(path)` gives a file's current content, `None` when it
/// does not exist; it is asked once per distinct path. Returns one write per distinct path, in
/// first-seen order, each with the file's final content after all its changes in order.
///
/// Every path is checked before any change is applied, so a response that both writes out of scope and
/// has a broken edit is reported as a scope violation.
pub fn plan_changes(
    changes: &[Change],
    allowed_modify: &[String],
    allowed_create: &[String],
    current: impl Fn(&str) -> Option<String>,
) -> Result<Vec<FileWrite>, ApplyError> {
    let modify: HashSet<&str> = allowed_modify.iter().map(|p| strip_dot_slash(p)).collect();
    let create: HashSet<&str> = allowed_create.iter().map(|p| strip_dot_slash(p)).collect();
    let scope = |path: &str, reason: &str| ApplyError::ScopeViolation { path: path.to_string(), reason: reason.into() };

    struct Planned<'a> {
        path: &'a str,
        existed: bool,
        content: Option<String>,
    }
    let mut files: Vec<Planned<'_>> = Vec::new();
    let mut slots: HashMap<&str, usize> = HashMap::new();
    let mut targets = Vec::with_capacity(changes.len());
    for change in changes {
        let written = change.path();
        let path = strip_dot_slash(written);
        if let Some(reason) = relative_path::problem(path) {
            return Err(scope(written, reason));
        }
        if !modify.contains(path) && !create.contains(path) {
            return Err(scope(written, "the path is not listed among the micro-task's files"));
        }
        let slot = *slots.entry(path).or_insert_with(|| {
            let content = current(path);
            files.push(Planned { path, existed: content.is_some(), content });
            files.len() - 1
        });
        let existed = files.get(slot).is_some_and(|f| f.existed);
        if existed && !modify.contains(path) {
            return Err(scope(written, "the file exists and is listed only for creation, not modification"));
        }
        if !existed && matches!(change, Change::WholeFile { .. }) && !create.contains(path) {
            return Err(scope(written, "the file does not exist and is listed only for modification, not creation"));
        }
        targets.push(slot);
    }

    for (index, (change, slot)) in changes.iter().zip(targets).enumerate() {
        let block = index + 1;
        let Some(file) = files.get_mut(slot) else { continue };
        match change {
            Change::WholeFile { content, .. } => file.content = Some(content.clone()),
            Change::SearchReplace { search, replace, .. } => {
                let path = file.path.to_string();
                let Some(content) = file.content.as_mut() else {
                    return Err(ApplyError::MissingFile { path, block });
                };
                match occurrences(content, search) {
                    (0, _) => return Err(ApplyError::SearchNotFound { path, block }),
                    (1, Some(at)) => content.replace_range(at..at + search.len(), replace),
                    (count, _) => return Err(ApplyError::AmbiguousSearch { path, block, count }),
                }
            }
        }
    }

    Ok(files
        .into_iter()
        .filter_map(|f| f.content.map(|content| FileWrite { path: f.path.to_string(), content, created: !f.existed }))
        .collect())
}

/// Counts occurrences of `needle`, overlapping ones included (`aa` occurs twice in `aaa`, and replacing
/// either would be a guess), and returns the first one's byte offset.
fn occurrences(haystack: &str, needle: &str) -> (usize, Option<usize>) {
    let mut count = 0;
    let mut first = None;
    let mut from = 0;
    while let Some(offset) = haystack.get(from..).and_then(|rest| rest.find(needle)) {
        let at = from + offset;
        first.get_or_insert(at);
        count += 1;
        from = at + haystack.get(at..).and_then(|rest| rest.chars().next()).map_or(1, char::len_utf8);
    }
    (count, first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(path: &str, content: &str) -> Change {
        Change::WholeFile { path: path.into(), content: content.into() }
    }

    fn sr(path: &str, search: &str, replace: &str) -> Change {
        Change::SearchReplace { path: path.into(), search: search.into(), replace: replace.into() }
    }

    fn list(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    fn files(entries: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = entries.iter().map(|(p, c)| (p.to_string(), c.to_string())).collect();
        move |path| map.get(path).cloned()
    }

    #[test]
    fn parses_a_whole_file_block() {
        let changes = parse_changes("Here it is:\n<file path=\"src/lib.rs\">\nfn a() {}\n</file>\nDone.").unwrap();
        assert_eq!(changes, vec![whole("src/lib.rs", "fn a() {}\n")]);
        assert_eq!(changes[0].path(), "src/lib.rs");
        let changes = parse_changes("<file path=\"a\">\r\nx\r\n</file><file path=\"b\"></file>").unwrap();
        assert_eq!(changes, vec![whole("a", "x\r\n"), whole("b", "")]);
    }

    #[test]
    fn parses_a_search_replace_block() {
        let response =
            "<edit path=\"src/lib.rs\">\n<search>\n    old();\n</search>\n<replace>\n    new();\n</replace>\n</edit>";
        let changes = parse_changes(response).unwrap();
        assert_eq!(changes, vec![sr("src/lib.rs", "    old();", "    new();")]);
        let changes = parse_changes("<edit path=\"a\"><search>x</search><replace></replace></edit>").unwrap();
        assert_eq!(changes, vec![sr("a", "x", "")]);
    }

    #[test]
    fn parses_multiple_blocks_in_order_and_ignores_prose() {
        let response = "I'll mention <filename> and </file> in prose.\n<edit path='x'> is not mine... no wait\n";
        assert!(matches!(parse_changes(response), Err(EditParseError::BadOpeningTag { block: 1, .. })));
        let response = "Intro <files> text.\n<file path=\"a.rs\">\nA\n</file>\nbetween\n<edit  path = \"b.rs\" note=\"x\">\n<search>\nB\n</search>\n<replace>\nC\n</replace>\n</edit>\n<file path=\"./c.rs\">\nC\n</file>";
        let changes = parse_changes(response).unwrap();
        assert_eq!(changes, vec![whole("a.rs", "A\n"), sr("b.rs", "B", "C"), whole("./c.rs", "C\n")]);
        assert_eq!(parse_changes("no blocks here").unwrap(), vec![]);
    }

    #[test]
    fn format_help_examples_parse() {
        let changes = parse_changes(FORMAT_HELP).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(matches!(&changes[0], Change::WholeFile { path, .. } if path == "src/example.rs"));
        assert_eq!(changes[1], sr("src/example.rs", "    42", "    43"));
        let writes = plan_changes(&changes, &[], &list(&["src/example.rs"]), |_| None).unwrap();
        assert_eq!(writes.len(), 1);
        assert!(writes[0].content.contains("    43\n"));
    }

    #[test]
    fn parse_errors_name_the_block() {
        let ok = "<file path=\"a\">\nA\n</file>\n";
        let cases: Vec<(String, EditParseError)> = vec![
            (format!("{ok}<file path=\"b\">\nB\n"), EditParseError::Unclosed { block: 2, tag: "file" }),
            (format!("{ok}<edit path=\"b"), EditParseError::Unclosed { block: 2, tag: "edit" }),
            (format!("{ok}<file>\nB\n</file>"), EditParseError::MissingPath { block: 2, tag: "file" }),
            (format!("{ok}<file path=\"\">\nB\n</file>"), EditParseError::MissingPath { block: 2, tag: "file" }),
            (format!("{ok}{ok}<edit path=\"b\">\n<search>\n\n</search>\n<replace>\nx\n</replace>\n</edit>"), {
                EditParseError::EmptySearch { block: 3 }
            }),
        ];
        for (response, expected) in cases {
            assert_eq!(parse_changes(&response), Err(expected), "{response}");
        }
        let bad_edits = [
            "<edit path=\"b\">\n<replace>\nx\n</replace>\n</edit>",
            "<edit path=\"b\">\n<search>\nx\n</search>\n</edit>",
            "<edit path=\"b\"><search>x</search><search>y</search><replace>z</replace></edit>",
            "<edit path=\"b\"><search>x<replace>y</search></replace></edit>",
            "<edit path=\"b\"><search>x<replace>y</replace></edit>",
        ];
        for response in bad_edits {
            assert!(matches!(parse_changes(response), Err(EditParseError::BadEdit { block: 1, .. })), "{response}");
        }
        let err = parse_changes("<file path='a'>\n</file>").unwrap_err();
        assert!(matches!(err, EditParseError::BadOpeningTag { block: 1, tag: "file", .. }));
        assert!(err.to_string().starts_with("block 1:"), "{err}");
        assert!(matches!(parse_changes("<file path=\"a\"/>"), Err(EditParseError::BadOpeningTag { .. })));
        assert!(matches!(parse_changes("<file path=\"a\" path=\"b\">"), Err(EditParseError::BadOpeningTag { .. })));
    }

    #[test]
    fn plans_create_and_modify() {
        let changes = vec![whole("src/new.rs", "new\n"), whole("./src/lib.rs", "lib v2\n")];
        let writes =
            plan_changes(&changes, &list(&["src/lib.rs"]), &list(&["./src/new.rs"]), files(&[("src/lib.rs", "v1")]))
                .unwrap();
        assert_eq!(
            writes,
            vec![
                FileWrite { path: "src/new.rs".into(), content: "new\n".into(), created: true },
                FileWrite { path: "src/lib.rs".into(), content: "lib v2\n".into(), created: false },
            ]
        );
    }

    #[test]
    fn edits_compose_in_order() {
        let changes = vec![
            sr("a.rs", "one", "two"),
            sr("b.rs", "x", "y"),
            sr("a.rs", "two", "three"),
            whole("c.rs", "fn c() {}\n"),
            sr("c.rs", "c()", "c2()"),
        ];
        let writes = plan_changes(
            &changes,
            &list(&["a.rs", "b.rs"]),
            &list(&["c.rs"]),
            files(&[("a.rs", "start one end"), ("b.rs", "x")]),
        )
        .unwrap();
        let summary: Vec<(&str, &str, bool)> =
            writes.iter().map(|w| (w.path.as_str(), w.content.as_str(), w.created)).collect();
        assert_eq!(
            summary,
            vec![("a.rs", "start three end", false), ("b.rs", "y", false), ("c.rs", "fn c2() {}\n", true)]
        );
    }

    #[test]
    fn search_must_occur_exactly_once() {
        let allowed = list(&["a.rs"]);
        let current = files(&[("a.rs", "aaa bb é é")]);
        let err = plan_changes(&[sr("a.rs", "zzz", "y")], &allowed, &[], &current).unwrap_err();
        assert_eq!(err, ApplyError::SearchNotFound { path: "a.rs".into(), block: 1 });
        assert_eq!(err.category(), "edit_failed");
        let err = plan_changes(&[sr("a.rs", "bb", "c"), sr("a.rs", "é", "e")], &allowed, &[], &current).unwrap_err();
        assert_eq!(err, ApplyError::AmbiguousSearch { path: "a.rs".into(), block: 2, count: 2 });
        let err = plan_changes(&[sr("a.rs", "aa", "b")], &allowed, &[], &current).unwrap_err();
        assert_eq!(err, ApplyError::AmbiguousSearch { path: "a.rs".into(), block: 1, count: 2 });
        let writes = plan_changes(&[sr("a.rs", "é é", "ü")], &allowed, &[], &current).unwrap();
        assert_eq!(writes[0].content, "aaa bb ü");
    }

    #[test]
    fn search_on_a_missing_file_fails() {
        let err = plan_changes(&[sr("a.rs", "x", "y")], &list(&["a.rs"]), &list(&["a.rs"]), |_| None).unwrap_err();
        assert_eq!(err, ApplyError::MissingFile { path: "a.rs".into(), block: 1 });
        assert!(!err.is_scope_violation());
    }

    #[test]
    fn scope_violations() {
        let modify = list(&["src/lib.rs", "../x", "/etc/passwd"]);
        let create = list(&["src/../../x", "src/new.rs"]);
        let current = files(&[("src/lib.rs", "lib"), ("src/new.rs", "already here")]);
        let cases = [
            whole("../x", ""),
            whole("/etc/passwd", ""),
            whole("src/../../x", ""),
            whole("src\\lib.rs", ""),
            whole("src//lib.rs", ""),
            whole("src/./lib.rs", ""),
            whole("C:/x", ""),
            whole("", ""),
            whole("src/", ""),
            whole("src/other.rs", ""),
            whole("src/lib.rs.bak", ""),
            sr("src/new.rs", "already", "now"),
            whole("src/new.rs", "overwrite"),
        ];
        for change in cases {
            let err = plan_changes(std::slice::from_ref(&change), &modify, &create, &current).unwrap_err();
            assert!(err.is_scope_violation(), "{change:?} gave {err:?}");
            assert_eq!(err.category(), "scope_violation");
        }
        let err = plan_changes(&[whole("src/missing.rs", "x")], &list(&["src/missing.rs"]), &[], |_| None).unwrap_err();
        assert_eq!(
            err,
            ApplyError::ScopeViolation {
                path: "src/missing.rs".into(),
                reason: "the file does not exist and is listed only for modification, not creation".into()
            }
        );
    }

    #[test]
    fn scope_is_checked_before_edits() {
        let changes = vec![sr("a.rs", "not there", "x"), whole("b.rs", "")];
        let err = plan_changes(&changes, &list(&["a.rs"]), &[], files(&[("a.rs", "a")])).unwrap_err();
        assert_eq!(err.category(), "scope_violation");
    }

    #[test]
    fn one_bad_change_means_no_writes() {
        let changes = vec![whole("a.rs", "new a"), sr("b.rs", "b", "c"), sr("a.rs", "missing", "x")];
        let result = plan_changes(&changes, &list(&["a.rs", "b.rs"]), &[], files(&[("a.rs", "a"), ("b.rs", "b")]));
        assert_eq!(result, Err(ApplyError::SearchNotFound { path: "a.rs".into(), block: 3 }));
    }

    #[test]
    fn current_is_read_once_per_path() {
        let calls = std::cell::Cell::new(0);
        let changes = vec![sr("a.rs", "1", "2"), sr("a.rs", "2", "3"), sr("a.rs", "3", "4")];
        let writes = plan_changes(&changes, &list(&["a.rs"]), &[], |_| {
            calls.set(calls.get() + 1);
            Some("1".to_string())
        })
        .unwrap();
        assert_eq!(writes[0].content, "4");
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn errors_serialize_with_a_kind() {
        let json = serde_json::to_value(ApplyError::MissingFile { path: "a".into(), block: 2 }).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "missing_file", "path": "a", "block": 2}));
    }

    use crate::fuzz::XorShift;

    const FRAGMENTS: &[&str] = &[
        "<file",
        "<file path=\"a.rs\">",
        "<file path=\"../x\">",
        "</file>",
        "<edit",
        "<edit path=\"a.rs\">",
        "</edit>",
        "<search>",
        "</search>",
        "<replace>",
        "</replace>",
        " path=",
        "path=\"",
        "'",
        "\"",
        "=",
        ">",
        "<",
        "/>",
        "/",
        "a",
        "é",
        "→",
        "\n",
        "\r\n",
        " ",
        "\t",
    ];

    #[test]
    fn fuzz_parse_changes_never_panics() {
        let mut rng = XorShift(0x0dd_ba11_feed_beef);
        let mut parsed_some = 0;
        for _ in 0..20_000 {
            let mut input = String::new();
            for _ in 0..rng.below(40) {
                if rng.below(8) == 0 {
                    input.push(char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('\u{fffd}'));
                } else {
                    input.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
                }
            }
            if let Ok(changes) = parse_changes(&input) {
                parsed_some += usize::from(!changes.is_empty());
                for change in &changes {
                    assert!(!change.path().is_empty());
                    if let Change::SearchReplace { search, .. } = change {
                        assert!(!search.trim().is_empty());
                    }
                }
                let result = plan_changes(&changes, &list(&["a.rs"]), &list(&["a.rs"]), |p| {
                    (p == "a.rs").then(|| "a é a\n".to_string())
                });
                if let Ok(writes) = result {
                    assert!(writes.iter().all(|w| w.path == "a.rs"));
                }
            }
        }
        assert!(parsed_some > 100, "{parsed_some}");
    }
}
