//! A YAML document tree that remembers where every node came from.
//!
//! Workflow validation must report every error at once with its line, so the
//! definition is not deserialised with serde (which stops at the first error
//! and forgets positions) but read from this tree by hand. Duplicate mapping
//! keys are errors here, not silently last-wins.

use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl Pos {
    fn from_marker(m: Marker) -> Pos {
        // yaml-rust2 lines are 1-based and columns 0-based.
        Pos { line: m.line().max(1), col: m.col() + 1 }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)
    }
}

/// A scalar as written: its text and whether it was quoted.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The scalar's text.
    pub text: String,
    /// Quoted scalars are always strings; plain ones may be numbers, bools or null.
    pub quoted: bool,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar (string, number, bool or null before interpretation).
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys keep their own positions.
    Map(Vec<(Node, Node)>),
}

/// A node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Where it starts.
    pub pos: Pos,
}

impl Node {
    /// The scalar text, if this node is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// A short name for the node's kind, used in type errors.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(s) if !s.quoted && is_null(&s.text) => "null",
            NodeKind::Scalar(_) => "scalar",
            NodeKind::Seq(_) => "list",
            NodeKind::Map(_) => "mapping",
        }
    }

    /// Converts the node to JSON using YAML 1.2 core-schema scalar rules.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.kind {
            NodeKind::Scalar(s) => scalar_to_json(s),
            NodeKind::Seq(items) => items.iter().map(Node::to_json).collect(),
            NodeKind::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// The node written back as YAML (block style, long strings as literal blocks), its scalars
/// typed as [`Node::to_json`] types them: what `steward workflow show` prints.
pub fn to_yaml(node: &Node) -> String {
    fn convert(node: &Node) -> yaml_rust2::Yaml {
        use yaml_rust2::Yaml;
        match &node.kind {
            NodeKind::Scalar(s) => match scalar_to_json(s) {
                serde_json::Value::Null => Yaml::Null,
                serde_json::Value::Bool(b) => Yaml::Boolean(b),
                serde_json::Value::Number(n) => n.as_i64().map_or_else(|| Yaml::Real(s.text.clone()), Yaml::Integer),
                _ => Yaml::String(s.text.clone()),
            },
            NodeKind::Seq(items) => Yaml::Array(items.iter().map(convert).collect()),
            NodeKind::Map(entries) => Yaml::Hash(
                entries
                    .iter()
                    .map(|(k, v)| (Yaml::String(k.as_str().unwrap_or_default().to_owned()), convert(v)))
                    .collect(),
            ),
        }
    }
    let mut out = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    // Writing into a String cannot fail; the document marker is left off.
    let _ = emitter.dump(&convert(node));
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    format!("{}\n", body.trim_end())
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Interprets a scalar as JSON: quoted scalars are strings, plain ones follow
/// the YAML 1.2 core schema (null, bool, int, float), anything else is a string.
pub fn scalar_to_json(s: &Scalar) -> serde_json::Value {
    use serde_json::Value;
    if s.quoted {
        return Value::String(s.text.clone());
    }
    let t = s.text.as_str();
    if is_null(t) {
        return Value::Null;
    }
    match t {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if t.chars().any(|c| c.is_ascii_digit())
        && let Ok(f) = t.parse::<f64>()
        && f.is_finite()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s.text.clone())
}

/// Why a document could not be read into a tree at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found.
    pub message: String,
}

/// Parses one YAML document into a positioned tree.
///
/// Anchors and aliases are refused: a workflow file should say what it means
/// where it says it, and aliases make positions ambiguous.
pub fn parse(source: &str) -> Result<Node, Vec<SyntaxError>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = *e.marker();
        return Err(vec![SyntaxError { pos: Pos::from_marker(m), message: e.info().to_owned() }]);
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    builder.root.ok_or_else(|| vec![SyntaxError { pos: Pos { line: 1, col: 1 }, message: "the file is empty".into() }])
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    errors: Vec<SyntaxError>,
}

impl Builder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending_key)) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let Some(name) = key.as_str()
                        && let Some((first, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(name))
                    {
                        self.errors.push(SyntaxError {
                            pos: key.pos,
                            message: format!("duplicate key `{name}` (first defined at line {})", first.pos.line),
                        });
                    }
                    entries.push((key, node));
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                if anchor != 0 {
                    self.errors
                        .push(SyntaxError { pos, message: "YAML anchors are not supported in workflow files".into() });
                }
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_node(Node { kind: NodeKind::Scalar(Scalar { text, quoted }), pos });
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) if anchor != 0 => {
                self.errors
                    .push(SyntaxError { pos, message: "YAML anchors are not supported in workflow files".into() });
                let frame = if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq(pos, Vec::new())
                } else {
                    Frame::Map(pos, Vec::new(), None)
                };
                self.stack.push(frame);
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(pos, Vec::new())),
            Event::MappingStart(..) => self.stack.push(Frame::Map(pos, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(p, items)) => Node { kind: NodeKind::Seq(items), pos: p },
                    Some(Frame::Map(p, entries, _)) => Node { kind: NodeKind::Map(entries), pos: p },
                    None => return,
                };
                self.push_node(node);
            }
            Event::Alias(_) => self
                .errors
                .push(SyntaxError { pos, message: "YAML aliases are not supported in workflow files".into() }),
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_duplicates_are_reported() {
        let src = "id: a\nsteps:\n  - id: x\n    id: y\n";
        let errs = parse(src).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].pos.line, 4);
        assert!(errs[0].message.contains("duplicate key `id` (first defined at line 3)"));

        let node = parse("id: a\nversion: 1\n").unwrap();
        let NodeKind::Map(entries) = &node.kind else { panic!("not a map") };
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        assert_eq!(entries[1].1.to_json(), serde_json::json!(1));
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let node = parse("[1, 1.5, true, 'true', ~, x, '', 1e3]").unwrap();
        assert_eq!(node.to_json(), serde_json::json!([1, 1.5, true, "true", null, "x", "", 1000.0]));
    }

    #[test]
    fn a_node_written_back_reads_the_same() {
        let src = "id: w\nversion: 1\nquoted: '1'\nprompt: |\n  line one\n\n  line two\nlist: [a, {b: 2.5}]\nnone: ~\n";
        let node = parse(src).unwrap();
        let written = to_yaml(&node);
        assert!(written.contains("prompt: |"), "{written}");
        assert_eq!(parse(&written).unwrap().to_json(), node.to_json(), "{written}");
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let errs = parse("id: [a\nversion: 1\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].pos.line >= 1);
    }
}
