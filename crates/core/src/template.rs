//! `{{ ... }}` templates: parsing, static checks, and rendering from resolved values.
//!
//! Four namespaces exist: `inputs.<name>[.<path>...]`,
//! `steps.<id>.outputs.<key>`, `workflow.<var>` and `state.<key>`. Parsing is
//! separate from rendering so that `steward validate` can check every
//! reference before a run starts.
//!
//! Shell commands get special treatment: substituting a value into the text of
//! a shell command would let an input like `"; rm -rf ~` run as code. So in a
//! `run:` command each placeholder becomes a reference to an environment
//! variable (`${STEWARD_TPL_0}`) and the value travels in the environment. The
//! shell expands it without parsing it again, so values are data, never code.
//!
//! The command is read with the shell parser ([`crate::shell`], issue 11) to
//! place each placeholder: one outside quotes is rendered `"${STEWARD_TPL_n}"`
//! so that its value is always exactly one word (no splitting, no globbing);
//! one inside double quotes or a here-document is already one word. Refused:
//! a placeholder that would not expand (single quotes, a quoted
//! here-document, a comment), one that would choose the program or become
//! code (`{{x}} arg`, `eval {{x}}`, `sh -c "{{x}}"`), one evaluated as
//! arithmetic (which can run commands), one inside backquotes, and a command
//! the parser cannot parse.

use std::fmt;

use serde_json::Value;

use crate::shell;

/// A `workflow.*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowVar {
    /// `workflow.run_id`
    RunId,
    /// `workflow.step_id`
    StepId,
    /// `workflow.attempt`
    Attempt,
    /// `workflow.workflow_id`
    WorkflowId,
    /// `workflow.run_workspace`: the run's own work area (DireClaw HEAD's
    /// `work/runs/<run_id>` under the directory the run works in), made before the step runs.
    RunWorkspace,
    /// `workflow.output_schema_json`: the step's declared outputs as a JSON Schema object.
    OutputSchemaJson,
    /// `workflow.output_paths_json`: the step's output files as a JSON object, key to path.
    OutputPathsJson,
    /// `workflow.channel`, `workflow.channel_profile_id`, `workflow.conversation_id`,
    /// `workflow.sender_id`, `workflow.selector_id`: the run input of that name (DireClaw's
    /// channel-started runs carry them), an error when the run was not given it.
    FromInput(&'static str),
}

impl WorkflowVar {
    const ALL: [(&'static str, WorkflowVar); 12] = [
        ("run_id", WorkflowVar::RunId),
        ("step_id", WorkflowVar::StepId),
        ("attempt", WorkflowVar::Attempt),
        ("workflow_id", WorkflowVar::WorkflowId),
        ("run_workspace", WorkflowVar::RunWorkspace),
        ("output_schema_json", WorkflowVar::OutputSchemaJson),
        ("output_paths_json", WorkflowVar::OutputPathsJson),
        ("channel", WorkflowVar::FromInput("channel")),
        ("channel_profile_id", WorkflowVar::FromInput("channel_profile_id")),
        ("conversation_id", WorkflowVar::FromInput("conversation_id")),
        ("sender_id", WorkflowVar::FromInput("sender_id")),
        ("selector_id", WorkflowVar::FromInput("selector_id")),
    ];
}

/// What a placeholder refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// `inputs.<name>` with an optional JSON path below it.
    Input {
        /// The input's name.
        name: String,
        /// Keys (or list indexes) below the input value.
        path: Vec<String>,
    },
    /// `steps.<step>.outputs.<key>`.
    StepOutput {
        /// The producing step.
        step: String,
        /// The output key.
        key: String,
    },
    /// `workflow.<var>`.
    Workflow(WorkflowVar),
    /// `state.<key>`: mutable run state; missing keys render empty.
    State(String),
    /// `workflow.output_paths.<key>`: where the step's output `key` is written.
    OutputPath(String),
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Input { name, path } => {
                write!(f, "inputs.{name}")?;
                path.iter().try_for_each(|p| write!(f, ".{p}"))
            }
            Ref::StepOutput { step, key } => write!(f, "steps.{step}.outputs.{key}"),
            Ref::Workflow(v) => {
                let name = WorkflowVar::ALL.iter().find(|(_, w)| w == v).map_or("?", |(n, _)| n);
                write!(f, "workflow.{name}")
            }
            Ref::State(k) => write!(f, "state.{k}"),
            Ref::OutputPath(k) => write!(f, "workflow.output_paths.{k}"),
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text copied as is.
    Lit(String),
    /// A placeholder.
    Ref(Ref),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// Literal text and placeholders in order.
    pub parts: Vec<Part>,
    /// For a shell command, per placeholder in order: whether it already
    /// stands where its value is one word (inside double quotes or a
    /// here-document), so it is rendered without quotes of its own.
    one_word: Vec<bool>,
}

/// A template that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed `{{{{` at offset {0}")]
    Unclosed(usize),
    /// `{{ }}`.
    #[error("empty placeholder `{{{{}}}}`")]
    Empty,
    /// Not one of the four namespaces, or malformed.
    #[error(
        "unknown placeholder `{{{{{0}}}}}`: use inputs.<name>, steps.<id>.outputs.<key>, workflow.<{1}> or state.<key>"
    )]
    Unknown(String, &'static str),
    /// A placeholder that would not expand in a shell command.
    #[error(
        "placeholder `{{{{{0}}}}}` is inside single quotes (or a quoted here-document or a comment) and would not expand; use double quotes"
    )]
    SingleQuoted(String),
    /// A placeholder that would choose the program or become code (issue 11).
    #[error(
        "placeholder `{{{{{0}}}}}` would be {1}: templates never choose the program or the code a step runs; pass the value as an argument"
    )]
    Code(String, &'static str),
    /// A placeholder inside an arithmetic expression.
    #[error(
        "placeholder `{{{{{0}}}}}` is inside an arithmetic expression, which evaluates its value and can run commands"
    )]
    Arithmetic(String),
    /// A placeholder inside a backquoted command substitution.
    #[error("placeholder `{{{{{0}}}}}` is inside backquotes; use `$(...)`")]
    Backquoted(String),
    /// A shell command the parser cannot parse.
    #[error("the command cannot be parsed as shell: {0}")]
    Shell(String),
}

const WORKFLOW_VARS: &str = "run_id|step_id|attempt|workflow_id|run_workspace|output_schema_json|output_paths_json|output_paths.<key>|channel|channel_profile_id|conversation_id|sender_id|selector_id";

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_ref(expr: &str) -> Result<Ref, TemplateError> {
    let unknown = || TemplateError::Unknown(expr.to_owned(), WORKFLOW_VARS);
    let segs: Vec<&str> = expr.split('.').collect();
    if segs.iter().any(|s| !is_ident(s)) {
        return Err(unknown());
    }
    match segs.as_slice() {
        ["inputs", name, path @ ..] => {
            Ok(Ref::Input { name: (*name).to_owned(), path: path.iter().map(|s| (*s).to_owned()).collect() })
        }
        ["steps", step, "outputs", key] => Ok(Ref::StepOutput { step: (*step).to_owned(), key: (*key).to_owned() }),
        ["workflow", var] => {
            WorkflowVar::ALL.iter().find(|(n, _)| n == var).map(|(_, v)| Ref::Workflow(*v)).ok_or_else(unknown)
        }
        ["state", key] => Ok(Ref::State((*key).to_owned())),
        ["workflow", "output_paths", key] => Ok(Ref::OutputPath((*key).to_owned())),
        _ => Err(unknown()),
    }
}

impl Template {
    /// Parses text with `{{ ... }}` placeholders.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        Self::parse_inner(text)
    }

    /// Parses a shell command and places each placeholder with the shell
    /// parser: see the module documentation for what is refused.
    pub fn parse_shell(text: &str) -> Result<Template, TemplateError> {
        let mut t = Self::parse_inner(text)?;
        let refs: Vec<String> = t.refs().map(ToString::to_string).collect();
        if refs.is_empty() {
            // Nothing to place; the command policy judges the command itself.
            return Ok(t);
        }
        let mut sentinel = String::new();
        let mut n = 0;
        for p in &t.parts {
            match p {
                Part::Lit(s) => sentinel.push_str(s),
                Part::Ref(_) => {
                    sentinel.push_str(&format!("${{{}{n}}}", shell::TEMPLATE_VAR_PREFIX));
                    n += 1;
                }
            }
        }
        let analysis = shell::analyze(&sentinel);
        if let Some(u) = analysis.unjudgeable.iter().find(|u| u.kind == shell::UnjudgeableKind::Unparseable) {
            return Err(TemplateError::Shell(u.reason.trim_start_matches("it cannot be parsed as shell: ").to_owned()));
        }
        let index = |name: &str| name.strip_prefix(shell::TEMPLATE_VAR_PREFIX).and_then(|k| k.parse::<usize>().ok());
        if let Some((k, role)) = analysis.code_params.iter().find_map(|(p, role)| index(p).map(|k| (k, *role))) {
            return Err(TemplateError::Code(refs.get(k).cloned().unwrap_or_default(), role));
        }
        for (k, r) in refs.iter().enumerate() {
            let uses: Vec<&shell::ParamUse> = analysis.params.iter().filter(|u| index(&u.name) == Some(k)).collect();
            if uses.is_empty() {
                return Err(TemplateError::SingleQuoted(r.clone()));
            }
            if uses.iter().any(|u| u.arithmetic) {
                return Err(TemplateError::Arithmetic(r.clone()));
            }
            if uses.iter().any(|u| u.backquoted) {
                return Err(TemplateError::Backquoted(r.clone()));
            }
            t.one_word.push(uses.iter().all(|u| u.quoting != shell::Quoting::Unquoted));
        }
        Ok(t)
    }

    fn parse_inner(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            let lit = &rest[..start];
            if !lit.is_empty() {
                parts.push(Part::Lit(lit.to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed(offset + start))?;
            let expr = after[..end].trim();
            if expr.is_empty() {
                return Err(TemplateError::Empty);
            }
            parts.push(Part::Ref(parse_ref(expr)?));
            let consumed = start + 2 + end + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template { parts, one_word: Vec::new() })
    }

    /// The placeholders, in order.
    pub fn refs(&self) -> impl Iterator<Item = &Ref> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Lit(_) => None,
        })
    }

    /// Renders to a string; `resolve` gives each placeholder's value.
    pub fn render(&self, mut resolve: impl FnMut(&Ref) -> Result<Value, RenderError>) -> Result<String, RenderError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Ref(r) => out.push_str(&value_text(&resolve(r)?)),
            }
        }
        Ok(out)
    }

    /// Renders a shell command: placeholders become `"${STEWARD_TPL_<n>}"`
    /// (without the quotes where they are already one word) and their values
    /// are returned as environment variables to pass along.
    pub fn render_shell(
        &self,
        mut resolve: impl FnMut(&Ref) -> Result<Value, RenderError>,
    ) -> Result<(String, Vec<(String, String)>), RenderError> {
        let mut out = String::new();
        let mut env = Vec::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Ref(r) => {
                    let var = format!("{}{}", shell::TEMPLATE_VAR_PREFIX, env.len());
                    if self.one_word.get(env.len()).copied().unwrap_or(false) {
                        out.push_str(&format!("${{{var}}}"));
                    } else {
                        out.push_str(&format!("\"${{{var}}}\""));
                    }
                    env.push((var, value_text(&resolve(r)?)));
                }
            }
        }
        Ok((out, env))
    }
}

/// A placeholder that has no value at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{{{{{reference}}}}}`: {reason}")]
pub struct RenderError {
    /// The placeholder.
    pub reference: String,
    /// Why it has no value.
    pub reason: String,
}

/// Strings render raw, everything else as compact JSON, null as empty.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Looks up a dotted path below a JSON value (object keys or list indexes).
pub fn lookup_path<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(r: &Ref) -> Result<Value, RenderError> {
        match r {
            Ref::Input { name, path } if name == "cfg" => lookup_path(&json!({"a": {"b": [10, 20]}}), path)
                .cloned()
                .ok_or(RenderError { reference: r.to_string(), reason: "missing".into() }),
            Ref::Input { .. } => Ok(json!("world")),
            Ref::Workflow(WorkflowVar::Attempt) => Ok(json!(2)),
            other => Err(RenderError { reference: other.to_string(), reason: "no value".into() }),
        }
    }

    #[test]
    fn parses_the_four_namespaces() {
        let t = Template::parse("{{inputs.x}} {{ steps.a.outputs.k }} {{workflow.run_id}} {{state.s}}").unwrap();
        let refs: Vec<String> = t.refs().map(ToString::to_string).collect();
        assert_eq!(refs, ["inputs.x", "steps.a.outputs.k", "workflow.run_id", "state.s"]);
    }

    #[test]
    fn malformed_placeholders_are_refused() {
        assert_eq!(Template::parse("a {{inputs.x"), Err(TemplateError::Unclosed(2)));
        assert_eq!(Template::parse("{{ }}"), Err(TemplateError::Empty));
        assert!(matches!(Template::parse("{{env.HOME}}"), Err(TemplateError::Unknown(..))));
        assert!(matches!(Template::parse("{{steps.a.stdout}}"), Err(TemplateError::Unknown(..))));
        assert!(matches!(Template::parse("{{workflow.nope}}"), Err(TemplateError::Unknown(..))));
    }

    #[test]
    fn renders_values_and_paths() {
        let t =
            Template::parse("hi {{inputs.name}} #{{workflow.attempt}} {{inputs.cfg.a.b.1}} {{inputs.cfg.a}}").unwrap();
        assert_eq!(t.render(resolve).unwrap(), r#"hi world #2 20 {"b":[10,20]}"#);
        let err = Template::parse("{{steps.x.outputs.y}}").unwrap().render(resolve).unwrap_err();
        assert_eq!(err.to_string(), "template `{{steps.x.outputs.y}}`: no value");
    }

    #[test]
    fn shell_rendering_passes_values_as_environment() {
        let t = Template::parse_shell(r#"echo "hello {{inputs.name}}" {{workflow.attempt}}"#).unwrap();
        let (cmd, env) = t.render_shell(resolve).unwrap();
        assert_eq!(cmd, r#"echo "hello ${STEWARD_TPL_0}" "${STEWARD_TPL_1}""#);
        assert_eq!(env, [("STEWARD_TPL_0".into(), "world".into()), ("STEWARD_TPL_1".into(), "2".into())]);
    }

    fn rendered(text: &str) -> String {
        Template::parse_shell(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .render_shell(|_| Ok(json!("v")))
            .unwrap()
            .0
    }

    /// Issue 11: a placeholder's value is always exactly one word, whatever quoting surrounds it.
    #[test]
    fn placeholders_always_render_as_one_word() {
        for (text, expected) in [
            ("echo {{inputs.s}}", r#"echo "${STEWARD_TPL_0}""#),
            ("echo x{{inputs.s}}y", r#"echo x"${STEWARD_TPL_0}"y"#),
            (r#"echo "a {{inputs.s}} b""#, r#"echo "a ${STEWARD_TPL_0} b""#),
            (r#"echo "{{inputs.s}}""#, r#"echo "${STEWARD_TPL_0}""#),
            ("echo 'a' {{inputs.s}} 'b'", r#"echo 'a' "${STEWARD_TPL_0}" 'b'"#),
            (r#"echo "it's {{inputs.s}}""#, r#"echo "it's ${STEWARD_TPL_0}""#),
            (r"echo don\'t {{inputs.s}}", r#"echo don\'t "${STEWARD_TPL_0}""#),
            (r#"echo "$(cat {{inputs.s}})""#, r#"echo "$(cat "${STEWARD_TPL_0}")""#),
            ("echo $(cat {{inputs.s}})", r#"echo $(cat "${STEWARD_TPL_0}")"#),
            ("X={{inputs.s}} make", r#"X="${STEWARD_TPL_0}" make"#),
            ("cat > {{inputs.s}}", r#"cat > "${STEWARD_TPL_0}""#),
            ("for f in {{inputs.s}}; do echo $f; done", r#"for f in "${STEWARD_TPL_0}"; do echo $f; done"#),
            ("[[ $a == {{inputs.s}} ]]", r#"[[ $a == "${STEWARD_TPL_0}" ]]"#),
            ("echo ${X:-{{inputs.s}}}", r#"echo ${X:-"${STEWARD_TPL_0}"}"#),
            ("cat <<EOF\n{{inputs.s}} \"q\"\nEOF", "cat <<EOF\n${STEWARD_TPL_0} \"q\"\nEOF"),
            ("echo {{inputs.a}} \"{{inputs.b}}\"", r#"echo "${STEWARD_TPL_0}" "${STEWARD_TPL_1}""#),
        ] {
            assert_eq!(rendered(text), expected, "{text}");
        }
    }

    /// Issue 11: templates never choose the program or the code a step runs.
    #[test]
    fn placeholders_that_would_run_as_code_are_refused() {
        for text in [
            "{{inputs.x}} --flag",
            "\"{{inputs.x}}\" arg",
            "ls | {{inputs.x}}",
            "echo $({{inputs.x}})",
            "sudo {{inputs.x}} a",
            "env A=1 {{inputs.x}}",
            "xargs {{inputs.x}}",
            "eval {{inputs.x}}",
            "eval \"echo {{inputs.x}}\"",
            "sh -c \"{{inputs.x}}\"",
            "bash -c \"echo {{inputs.x}}\"",
            "sh {{inputs.x}}",
            "source {{inputs.x}}",
            ". \"{{inputs.x}}\"",
            "python3 -c \"{{inputs.x}}\"",
            "trap \"{{inputs.x}}\" EXIT",
            "find . -exec {{inputs.x}} {} +",
        ] {
            assert!(
                matches!(Template::parse_shell(text), Err(TemplateError::Code(..))),
                "{text}: {:?}",
                Template::parse_shell(text)
            );
        }
        for text in ["echo '{{inputs.x}}'", "cat <<'EOF'\n{{inputs.x}}\nEOF", "true # {{inputs.x}}"] {
            assert!(matches!(Template::parse_shell(text), Err(TemplateError::SingleQuoted(_))), "{text}");
        }
        for text in ["echo $(( {{inputs.n}} + 1 ))", "(( {{inputs.n}} > 2 ))", "[[ {{inputs.n}} -eq 1 ]]"] {
            assert!(matches!(Template::parse_shell(text), Err(TemplateError::Arithmetic(_))), "{text}");
        }
        assert!(matches!(Template::parse_shell("echo `cat {{inputs.x}}`"), Err(TemplateError::Backquoted(_))));
        assert!(matches!(Template::parse_shell("echo \"{{inputs.x}}"), Err(TemplateError::Shell(_))));
        // Arguments, redirect targets and data are fine.
        for text in ["git commit -m {{inputs.x}}", "python3 script.py {{inputs.x}}", "echo {{inputs.x}} | wc -c"] {
            assert!(Template::parse_shell(text).is_ok(), "{text}");
        }
    }
}
