//! Shell commands read the way a shell reads them: every simple command a text would run, normalised (issue 11).
//!
//! The terminal policy, capability derivation and workflow validation all
//! judge shell text. Regular expressions over that text cannot be complete
//! (`git -c a=b reset --hard`, `rm -r -f ~`, `sh -c 'rm -rf /'`), so this
//! module parses it with `brush-parser`, a POSIX sh/bash parser, and walks
//! the syntax tree: pipelines, lists, subshells, brace groups, loops,
//! function bodies, command and process substitutions (also inside double
//! quotes, assignments and redirect targets), and recursively the literal
//! text given to `sh -c`, `eval`, `trap`, `watch`, `su -c`, literal text piped
//! or here-documented into a shell, and git's shell-valued settings.
//!
//! Each simple command is normalised: quoting removed, absolute program paths
//! reduced to their name, wrappers (`env`, `sudo`, `nice`, `timeout`, `xargs`,
//! `busybox`, ...) stripped so that the wrapped command is the one judged,
//! git's global options set aside. What a static reading cannot know is
//! reported as [`Unjudgeable`]: a program computed at run time (`$G reset`),
//! `eval` or `sh -c` of non-literal text, text from a program piped into a
//! shell, a script that is generated (`source <(...)`), and text the parser
//! cannot parse. [`rules`] judges the result.
//!
//! Pure: no IO, no environment; the caller passes what it knows about the
//! workspace ([`rules::Context`]).

mod options;
pub mod paths;
pub mod rules;
mod walk;
mod words;

pub use options::Parsed;

/// How deep `sh -c` inside `eval` inside `sh -c` ... is followed before giving up.
pub const MAX_DEPTH: usize = 8;

/// Prefix of the environment variables that carry template values into a shell
/// step (`${STEWARD_TPL_0}`); see [`crate::template`].
pub const TEMPLATE_VAR_PREFIX: &str = "STEWARD_TPL_";

/// One word of a command as far as a static reading can tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShellWord {
    /// The word after quote removal. Expansions whose value is unknown stay
    /// as written (`$X`, `$(...)`); a leading unquoted `~` or `$HOME` is `~`.
    pub text: String,
    /// Nothing in it is decided at run time.
    pub literal: bool,
    /// `text` starts with `~` that stands for a home directory.
    pub home: bool,
    /// Bytes of `text` that are known: everything before the first unknown expansion.
    pub known: usize,
    /// Byte offset of the first unquoted glob character, if any.
    pub glob: Option<usize>,
    /// It starts with an expansion that may be empty, so `$X/` may be `/`.
    pub leading_param: bool,
    /// It is a process substitution, `<(...)` or `>(...)`.
    pub process_substitution: bool,
    /// Some of it comes from an expansion, even one whose value is known (`G=git; $G`).
    pub expanded: bool,
    /// Parameters it expands (names, without `$`).
    pub params: Vec<String>,
}

impl ShellWord {
    /// A literal word.
    pub fn lit(text: &str) -> ShellWord {
        ShellWord { text: text.to_owned(), literal: true, known: text.len(), ..ShellWord::default() }
    }

    /// Literal and without glob characters: the word is exactly `text` when it runs.
    pub fn exact(&self) -> Option<&str> {
        (self.literal && self.glob.is_none()).then_some(self.text.as_str())
    }

    /// Whether it expands a template placeholder's variable.
    pub fn has_template(&self) -> bool {
        self.params.iter().any(|p| p.starts_with(TEMPLATE_VAR_PREFIX))
    }
}

/// The direction of a redirection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `<`
    Read,
    /// `>`, `>|`, `&>`, `>&` to a file.
    Write,
    /// `>>`, `&>>`.
    Append,
    /// `<>`.
    ReadWrite,
}

/// A redirection to or from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// Its direction.
    pub kind: RedirectKind,
    /// The file.
    pub target: ShellWord,
}

/// A simple command, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    /// The program's name: the last component of a literal program word
    /// (`/usr/bin/git` → `git`), after wrappers are stripped.
    pub program: String,
    /// The program word as written, quoting removed.
    pub program_path: String,
    /// Wrappers that start it, outermost first (`sudo`, `env`, `timeout`, ...).
    pub wrappers: Vec<String>,
    /// Its arguments, without the wrappers' own options (and for git,
    /// without the global options before the subcommand).
    pub args: Vec<ShellWord>,
    /// Settings given on its command line before the subcommand (git's `-c key=value`).
    pub settings: Vec<String>,
    /// Its redirections to files, including those of enclosing compound commands.
    pub redirects: Vec<Redirect>,
    /// The directory it runs in as a path relative to where the text starts
    /// (`""`), absolute (`/tmp/x`) or home-relative (`~/x`), as far as `cd`
    /// tells; `None` once a `cd` went somewhere unknown.
    pub cwd: Option<String>,
    /// It is one of several commands in a pipeline.
    pub piped: bool,
    /// It runs in the background (`&`), itself or an enclosing list.
    pub background: bool,
    /// It calls a shell function defined earlier in the text.
    pub function_call: bool,
    /// The innermost function whose body it is in.
    pub in_function: Option<String>,
    /// Its arguments also come from standard input (`xargs`), or stand for
    /// found files (`find -exec`).
    pub more_args: bool,
    /// The text it was read from (the simple command, or the text of `sh -c` etc. around it).
    pub source: String,
    /// Where it came from, outermost first (`sh -c`, `eval`, ...), for reasons.
    pub via: Vec<String>,
}

impl Command {
    /// `program arg arg ...` with quoting removed: what operator patterns are matched against.
    pub fn text(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.text);
        }
        s
    }

    /// The same with wrappers and settings in front (`sudo env git -c a=b reset`).
    pub fn full_text(&self) -> String {
        let mut parts: Vec<&str> = self.wrappers.iter().map(String::as_str).collect();
        parts.push(&self.program);
        let mut s = parts.join(" ");
        for c in &self.settings {
            s.push_str(" -c ");
            s.push_str(c);
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.text);
        }
        s
    }

    /// How it is shown in a reason: its text, and where it was found when nested.
    pub fn shown(&self) -> String {
        let text = if self.program.is_empty() { self.source.clone() } else { self.text() };
        let mut s = format!("`{text}`");
        for v in self.via.iter().rev() {
            s.push_str(&format!(" (in {v})"));
        }
        s
    }
}

/// What kind of thing cannot be judged before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnjudgeableKind {
    /// The parser cannot parse the text.
    Unparseable,
    /// The program word is computed at run time (`$G`, `$(echo rm)`, a glob).
    ComputedProgram,
    /// `eval` (or `trap`, `alias`) of text that is not literal.
    EvalText,
    /// `sh -c` (or `su -c`, `watch`, a shell-valued setting) of text that is not literal.
    ShellText,
    /// Output of a program piped or redirected into a shell or interpreter.
    PipedIntoShell,
    /// A script that is generated or read from standard input (`source <(...)`, `bash /dev/stdin`).
    GeneratedScript,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl UnjudgeableKind {
    /// The policy rule that refuses it.
    pub fn rule(self) -> &'static str {
        match self {
            UnjudgeableKind::Unparseable => "unparseable",
            UnjudgeableKind::ComputedProgram => "computed-program",
            UnjudgeableKind::EvalText => "eval-text",
            UnjudgeableKind::ShellText => "shell-text",
            UnjudgeableKind::PipedIntoShell => "piped-into-shell",
            UnjudgeableKind::GeneratedScript => "generated-script",
            UnjudgeableKind::TooDeep => "too-deep",
        }
    }
}

/// A construct whose effect a static reading cannot know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unjudgeable {
    /// What it is.
    pub kind: UnjudgeableKind,
    /// Why, for a person.
    pub reason: String,
    /// Parameters that decide it (template variables show that a placeholder does).
    pub params: Vec<String>,
    /// Where it came from, outermost first.
    pub via: Vec<String>,
    /// The simple command it is in (or the text that does not parse).
    pub source: String,
}

/// Where a parameter is expanded, for the template checks (issue 11, point 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// Outside quotes: subject to word splitting and globbing.
    Unquoted,
    /// Inside double quotes.
    Double,
    /// In the body of a here-document, where quotes are literal characters.
    HereDoc,
}

/// One expansion of a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamUse {
    /// Its name.
    pub name: String,
    /// The quoting around it.
    pub quoting: Quoting,
    /// It is inside an arithmetic expression (where a value is evaluated, and can run commands).
    pub arithmetic: bool,
    /// It is inside a backquoted command substitution.
    pub backquoted: bool,
}

/// Everything a text would run, as far as a static reading can tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// Every simple command, in the order found.
    pub commands: Vec<Command>,
    /// What cannot be judged.
    pub unjudgeable: Vec<Unjudgeable>,
    /// Every parameter expansion at the top level of the text (not inside nested `sh -c` text).
    pub params: Vec<ParamUse>,
    /// Parameters that decide what code runs (the program, a script, the text of
    /// `sh -c` or `eval`), with that role.
    pub code_params: Vec<(String, &'static str)>,
}

impl Analysis {
    /// The programs it starts, wrappers included, each once in order; a
    /// computed program or an unparseable text adds `None`.
    pub fn programs(&self) -> Vec<Option<String>> {
        let mut out: Vec<Option<String>> = Vec::new();
        // Builtins that only say how to run a command start nothing themselves.
        const BUILTIN_WRAPPERS: &[&str] = &["exec", "command", "builtin"];
        for c in &self.commands {
            let wrappers = c.wrappers.iter().filter(|w| !BUILTIN_WRAPPERS.contains(&w.as_str()));
            for p in wrappers.chain(std::iter::once(&c.program)).filter(|p| !p.is_empty()) {
                let call = c.function_call && p == &c.program;
                if !(call || out.iter().any(|o| o.as_deref() == Some(p.as_str()))) {
                    out.push(Some(p.clone()));
                }
            }
        }
        if self.unjudgeable.iter().any(|u| {
            matches!(u.kind, UnjudgeableKind::Unparseable | UnjudgeableKind::ComputedProgram | UnjudgeableKind::TooDeep)
        }) {
            out.push(None);
        }
        out
    }
}

/// Reads a shell text: every simple command it would run, normalised, and what cannot be judged.
pub fn analyze(text: &str) -> Analysis {
    walk::Walker::run(text)
}

#[cfg(test)]
mod tests;
