//! The walk over brush-parser's syntax tree: every simple command found, wrappers stripped, nested texts followed.

use std::collections::{BTreeMap, BTreeSet};

use brush_parser::ast::{
    self, Command as AstCommand, CommandPrefixOrSuffixItem, CompoundCommand, CompoundList, ExtendedTestExpr,
    IoFileRedirectKind, IoFileRedirectTarget, IoRedirect, Pipeline, SeparatorOperator, SimpleCommand,
};
use brush_parser::{Parser, ParserOptions};

use super::{Analysis, Command, MAX_DEPTH, Redirect, RedirectKind, ShellWord, Unjudgeable, UnjudgeableKind as K};

/// Shells whose `-c` text, script operand or standard input is shell code.
pub(crate) const SHELLS: &[&str] =
    &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "pdksh", "yash", "posh", "rbash", "fish", "csh", "tcsh"];

/// Interpreters that read a program from standard input when given none:
/// (name prefix, flags whose argument is program text, flags that take an argument).
const INTERPRETERS: &[(&str, &str, &str)] = &[
    ("python", "cm", "WXQ"),
    ("pypy", "cm", "WXQ"),
    ("perl", "eE", ""),
    ("ruby", "e", "Ir"),
    ("node", "ep", "r"),
    ("nodejs", "ep", "r"),
    ("deno", "", ""),
    ("php", "rf", "dc"),
    ("lua", "e", "l"),
    ("Rscript", "e", ""),
    ("tclsh", "", ""),
    ("osascript", "e", ""),
];

/// Environment variables whose value some program runs as shell text.
const SHELL_VALUED_ENV: &[&str] = &[
    "GIT_SSH_COMMAND",
    "GIT_PAGER",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_ASKPASS",
    "PAGER",
    "MANPAGER",
    "EDITOR",
    "VISUAL",
    "PROMPT_COMMAND",
    "LESSOPEN",
    "LESSCLOSE",
];

/// git settings whose value git runs as shell text (`-c core.pager='...'`).
fn git_setting_runs_shell(key: &str, value: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "core.pager"
            | "core.editor"
            | "core.sshcommand"
            | "core.fsmonitor"
            | "core.askpass"
            | "sequence.editor"
            | "diff.external"
            | "interactive.difffilter"
            | "uploadpack.packobjectshook"
    ) || k.starts_with("pager.")
        || (k.starts_with("filter.") && (k.ends_with(".clean") || k.ends_with(".smudge") || k.ends_with(".process")))
        || (k.starts_with("diff.") && (k.ends_with(".textconv") || k.ends_with(".command")))
        || (k.starts_with("merge.") && k.ends_with(".driver"))
        || (k == "credential.helper" && value.starts_with('!'))
}

/// A wrapper: a program that runs the command in its arguments.
struct Wrapper {
    name: &'static str,
    /// Short options that take an argument.
    short_arg: &'static str,
    /// Long options that take an argument (also accepted as `--name=value`).
    long_arg: &'static [&'static str],
    /// `NAME=value` words before the command set its environment.
    assignments: bool,
    /// Operands before the command (`timeout DURATION`).
    leading: usize,
    /// Options that mean no command is run.
    no_run: &'static [&'static str],
}

const WRAPPERS: &[Wrapper] = &[
    Wrapper {
        name: "env",
        short_arg: "uCSP",
        long_arg: &["unset", "chdir", "split-string", "default-signal", "ignore-signal", "block-signal"],
        assignments: true,
        leading: 0,
        no_run: &[],
    },
    Wrapper { name: "command", short_arg: "", long_arg: &[], assignments: false, leading: 0, no_run: &["-v", "-V"] },
    Wrapper { name: "exec", short_arg: "a", long_arg: &[], assignments: false, leading: 0, no_run: &[] },
    Wrapper { name: "builtin", short_arg: "", long_arg: &[], assignments: false, leading: 0, no_run: &[] },
    Wrapper { name: "nice", short_arg: "n", long_arg: &["adjustment"], assignments: false, leading: 0, no_run: &[] },
    Wrapper { name: "nohup", short_arg: "", long_arg: &[], assignments: false, leading: 0, no_run: &[] },
    Wrapper {
        name: "timeout",
        short_arg: "sk",
        long_arg: &["signal", "kill-after"],
        assignments: false,
        leading: 1,
        no_run: &[],
    },
    Wrapper {
        name: "xargs",
        short_arg: "aEILnPsd",
        long_arg: &["arg-file", "delimiter", "max-args", "max-procs", "max-chars", "process-slot-var"],
        assignments: false,
        leading: 0,
        no_run: &[],
    },
    Wrapper {
        name: "sudo",
        short_arg: "ugCDhpRrtTU",
        long_arg: &[
            "user",
            "group",
            "close-from",
            "chdir",
            "host",
            "prompt",
            "chroot",
            "role",
            "type",
            "command-timeout",
            "other-user",
        ],
        assignments: true,
        leading: 0,
        no_run: &["-l", "--list", "-v", "--validate", "-K", "--remove-timestamp", "-V", "--version"],
    },
    Wrapper { name: "doas", short_arg: "uC", long_arg: &[], assignments: false, leading: 0, no_run: &["-L"] },
    Wrapper {
        name: "stdbuf",
        short_arg: "ioe",
        long_arg: &["input", "output", "error"],
        assignments: false,
        leading: 0,
        no_run: &[],
    },
    Wrapper {
        name: "time",
        short_arg: "fo",
        long_arg: &["format", "output"],
        assignments: false,
        leading: 0,
        no_run: &[],
    },
    Wrapper { name: "setsid", short_arg: "", long_arg: &[], assignments: false, leading: 0, no_run: &[] },
    Wrapper {
        name: "ionice",
        short_arg: "cnpPu",
        long_arg: &["class", "classdata", "pid", "pgid", "uid"],
        assignments: false,
        leading: 0,
        no_run: &[],
    },
    Wrapper { name: "taskset", short_arg: "", long_arg: &[], assignments: false, leading: 1, no_run: &["-p", "--pid"] },
    Wrapper { name: "chrt", short_arg: "T", long_arg: &[], assignments: false, leading: 1, no_run: &["-p", "--pid"] },
    Wrapper {
        name: "chroot",
        short_arg: "",
        long_arg: &["userspec", "groups"],
        assignments: false,
        leading: 1,
        no_run: &[],
    },
    Wrapper { name: "unbuffer", short_arg: "", long_arg: &[], assignments: false, leading: 0, no_run: &[] },
    Wrapper {
        name: "strace",
        short_arg: "eoOpPsSuIaXbE",
        long_arg: &["output", "trace", "signal", "attach", "user"],
        assignments: false,
        leading: 0,
        no_run: &[],
    },
    Wrapper {
        name: "ltrace",
        short_arg: "eoOpPsSuIaXbE",
        long_arg: &["output"],
        assignments: false,
        leading: 0,
        no_run: &[],
    },
];

/// Where a command's standard input comes from.
#[derive(Debug, Clone)]
enum Stdin {
    /// The step's own (nothing the text decides).
    Inherited,
    /// Text known before running (`echo 'ls' |`, a quoted here-document).
    Literal(String),
    /// A file (`< script.sh`).
    File(ShellWord),
    /// Output of a program, or text with expansions: named for the reason.
    From(String),
}

/// A command about to be normalised.
struct Invocation {
    program: ShellWord,
    args: Vec<ShellWord>,
    redirects: Vec<Redirect>,
    stdin: Stdin,
    wrappers: Vec<String>,
    more_args: bool,
    /// Text that `xargs -I` replaces with input.
    replace: Option<String>,
    source: String,
}

/// A value known before running: its text, and whether it starts with a home directory (`D=~`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) text: String,
    pub(crate) home: bool,
}

impl Known {
    pub(crate) fn plain(text: &str) -> Known {
        Known { text: text.to_owned(), home: false }
    }
}

/// State saved around subshells and pipelines.
struct Saved {
    vars: BTreeMap<String, Option<Known>>,
    cwd: Option<String>,
    ifs_changed: bool,
}

/// The walk's state.
pub(crate) struct Walker {
    pub(crate) out: Analysis,
    /// Nested parses of any kind (substitutions included), a guard against runaway recursion.
    nest: usize,
    /// Nested code texts (`sh -c`, `eval`, ...); template parameters are recorded only at 0.
    pub(crate) code_depth: usize,
    /// Variables assigned in the text: `Some(value)` when the value is known.
    pub(crate) vars: BTreeMap<String, Option<Known>>,
    functions: BTreeSet<String>,
    pub(crate) ifs_changed: bool,
    cwd: Option<String>,
    function_stack: Vec<String>,
    via: Vec<String>,
    inherited: Vec<Redirect>,
    background: bool,
    piped: bool,
    stdin: Stdin,
    pub(crate) backquoted: usize,
    pub(crate) arithmetic: usize,
    pub(crate) opts: ParserOptions,
    /// The simple command being read, for reasons.
    current: String,
}

pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `NAME=value` split, when `word` is an assignment.
fn assignment(word: &str) -> Option<(&str, &str)> {
    word.split_once('=').filter(|(n, _)| is_name(n.strip_suffix('+').unwrap_or(n)))
}

fn is_interpreter(name: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    INTERPRETERS.iter().find(|(prefix, _, _)| {
        name == *prefix
            || name.strip_prefix(prefix).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    })
}

impl Walker {
    pub(crate) fn run(text: &str) -> Analysis {
        let mut w = Walker {
            out: Analysis::default(),
            nest: 0,
            code_depth: 0,
            vars: BTreeMap::new(),
            functions: BTreeSet::new(),
            ifs_changed: false,
            cwd: Some(String::new()),
            function_stack: Vec::new(),
            via: Vec::new(),
            inherited: Vec::new(),
            background: false,
            piped: false,
            stdin: Stdin::Inherited,
            backquoted: 0,
            arithmetic: 0,
            opts: ParserOptions::default(),
            current: String::new(),
        };
        w.text(text);
        w.out
    }

    pub(crate) fn unjudgeable(&mut self, kind: K, reason: String, params: Vec<String>) {
        let source = self.current.clone();
        self.out.unjudgeable.push(Unjudgeable { kind, reason, params, via: self.via.clone(), source });
    }

    fn save(&self) -> Saved {
        Saved { vars: self.vars.clone(), cwd: self.cwd.clone(), ifs_changed: self.ifs_changed }
    }

    fn restore(&mut self, s: Saved) {
        self.vars = s.vars;
        self.cwd = s.cwd;
        self.ifs_changed = s.ifs_changed;
    }

    /// Parses and walks a text in the current state (a command substitution, or the top level).
    pub(crate) fn text(&mut self, text: &str) {
        if self.nest > MAX_DEPTH * 4 || self.code_depth > MAX_DEPTH {
            self.unjudgeable(K::TooDeep, format!("commands are nested deeper than {MAX_DEPTH} levels"), Vec::new());
            return;
        }
        let mut parser = Parser::new(std::io::BufReader::new(text.as_bytes()), &self.opts);
        match parser.parse_program() {
            Ok(program) => {
                self.nest += 1;
                for list in &program.complete_commands {
                    self.list(list);
                }
                self.nest -= 1;
            }
            Err(e) => {
                let outer = std::mem::replace(&mut self.current, text.chars().take(80).collect());
                self.unjudgeable(K::Unparseable, format!("it cannot be parsed as shell: {e}"), Vec::new());
                self.current = outer;
            }
        }
    }

    /// Walks a text that some program runs as shell code (`sh -c TEXT`), in a fresh shell state.
    fn code(&mut self, text: &str, via: String) {
        let saved = self.save();
        let stdin = std::mem::replace(&mut self.stdin, Stdin::Inherited);
        let functions = self.functions.clone();
        self.vars.clear();
        self.ifs_changed = false;
        self.via.push(via);
        self.code_depth += 1;
        self.text(text);
        self.code_depth -= 1;
        self.via.pop();
        self.functions = functions;
        self.stdin = stdin;
        self.restore(saved);
    }

    /// Walks a command substitution's text and returns its output when it is known.
    pub(crate) fn substitution(&mut self, text: &str) -> Option<Known> {
        let saved = self.save();
        let before = self.out.commands.len();
        let stdin = std::mem::replace(&mut self.stdin, Stdin::Inherited);
        self.text(text);
        self.stdin = stdin;
        self.restore(saved);
        // `$(pwd)` and `$(echo literal)` are known; anything else is not.
        let new = &self.out.commands[before..];
        match new {
            [c] if c.program == "pwd" && c.wrappers.is_empty() => Some(Known::plain(".")),
            [c] if c.program == "echo"
                && c.wrappers.is_empty()
                && c.args.iter().all(|a| a.exact().is_some() && !a.text.starts_with('-')) =>
            {
                Some(Known {
                    text: c.args.iter().map(|a| a.text.as_str()).collect::<Vec<_>>().join(" "),
                    home: c.args.first().is_some_and(|a| a.home),
                })
            }
            _ => None,
        }
    }

    fn list(&mut self, list: &CompoundList) {
        for ast::CompoundListItem(and_or, sep) in &list.0 {
            let was = self.background;
            self.background |= matches!(sep, SeparatorOperator::Async);
            self.pipeline(&and_or.first);
            for next in &and_or.additional {
                match next {
                    ast::AndOr::And(p) | ast::AndOr::Or(p) => self.pipeline(p),
                }
            }
            self.background = was;
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        let n = p.seq.len();
        let (was_piped, was_stdin) = (self.piped, self.stdin.clone());
        let mut prev: Option<(Option<String>, String)> = None;
        for (i, cmd) in p.seq.iter().enumerate() {
            if n > 1 {
                self.piped = true;
            }
            if i > 0 {
                self.stdin = match prev.take() {
                    Some((Some(text), _)) => Stdin::Literal(text),
                    Some((None, from)) => Stdin::From(from),
                    None => Stdin::Inherited,
                };
            }
            // Each command of a pipeline runs in its own subshell.
            let saved = (n > 1).then(|| self.save());
            prev = Some(self.command(cmd));
            if let Some(s) = saved {
                self.restore(s);
            }
        }
        self.piped = was_piped;
        self.stdin = was_stdin;
    }

    /// Walks one command; returns its output when known before running, and how to name it.
    fn command(&mut self, cmd: &AstCommand) -> (Option<String>, String) {
        match cmd {
            AstCommand::Simple(sc) => self.simple(sc),
            AstCommand::Compound(cc, redirects) => {
                let (inherited, stdin) = (self.inherited.clone(), self.stdin.clone());
                if let Some(list) = redirects {
                    let mut r = Vec::new();
                    let mut input = None;
                    for io in &list.0 {
                        self.redirect(io, &mut r, &mut input);
                    }
                    self.inherited.extend(r);
                    if let Some(i) = input {
                        self.stdin = i;
                    }
                }
                self.compound(cc);
                self.inherited = inherited;
                self.stdin = stdin;
                (None, "a compound command".to_owned())
            }
            AstCommand::Function(def) => {
                let name = def.fname.value.clone();
                self.functions.insert(name.clone());
                self.function_stack.push(name);
                let saved = self.save();
                let inherited = self.inherited.clone();
                if let Some(list) = &def.body.1 {
                    let mut r = Vec::new();
                    let mut input = None;
                    for io in &list.0 {
                        self.redirect(io, &mut r, &mut input);
                    }
                    self.inherited.extend(r);
                }
                self.compound(&def.body.0);
                self.inherited = inherited;
                self.restore(saved);
                self.function_stack.pop();
                (None, "a function definition".to_owned())
            }
            AstCommand::ExtendedTest(test, _) => {
                self.extended_test(&test.expr);
                (None, "`[[ ... ]]`".to_owned())
            }
        }
    }

    fn extended_test(&mut self, e: &ExtendedTestExpr) {
        match e {
            ExtendedTestExpr::And(a, b) | ExtendedTestExpr::Or(a, b) => {
                self.extended_test(a);
                self.extended_test(b);
            }
            ExtendedTestExpr::Not(a) | ExtendedTestExpr::Parenthesized(a) => self.extended_test(a),
            ExtendedTestExpr::UnaryTest(_, w) => {
                self.word_no_split(&w.value);
            }
            ExtendedTestExpr::BinaryTest(pred, a, b) => {
                // Arithmetic comparisons evaluate their operands as expressions.
                let arith = matches!(
                    pred,
                    ast::BinaryPredicate::ArithmeticEqualTo
                        | ast::BinaryPredicate::ArithmeticNotEqualTo
                        | ast::BinaryPredicate::ArithmeticLessThan
                        | ast::BinaryPredicate::ArithmeticLessThanOrEqualTo
                        | ast::BinaryPredicate::ArithmeticGreaterThan
                        | ast::BinaryPredicate::ArithmeticGreaterThanOrEqualTo
                );
                self.arithmetic += usize::from(arith);
                self.word_no_split(&a.value);
                self.word_no_split(&b.value);
                self.arithmetic -= usize::from(arith);
            }
        }
    }

    fn compound(&mut self, cc: &CompoundCommand) {
        match cc {
            CompoundCommand::Arithmetic(a) => self.arithmetic_text(&a.expr.value),
            CompoundCommand::ArithmeticForClause(f) => {
                for e in [&f.initializer, &f.condition, &f.updater].into_iter().flatten() {
                    self.arithmetic_text(&e.value);
                }
                self.list(&f.body.list);
            }
            CompoundCommand::BraceGroup(g) => self.list(&g.list),
            CompoundCommand::Subshell(s) => {
                let saved = self.save();
                self.list(&s.list);
                self.restore(saved);
            }
            CompoundCommand::ForClause(f) => {
                for w in f.values.iter().flatten() {
                    self.words(&w.value);
                }
                self.vars.insert(f.variable_name.clone(), None);
                self.list(&f.body.list);
            }
            CompoundCommand::CaseClause(c) => {
                self.word_no_split(&c.value.value);
                for item in &c.cases {
                    for p in &item.patterns {
                        self.word_no_split(&p.value);
                    }
                    if let Some(l) = &item.cmd {
                        self.list(l);
                    }
                }
            }
            CompoundCommand::IfClause(i) => {
                self.list(&i.condition);
                self.list(&i.then);
                for e in i.elses.iter().flatten() {
                    if let Some(c) = &e.condition {
                        self.list(c);
                    }
                    self.list(&e.body);
                }
            }
            CompoundCommand::WhileClause(w) | CompoundCommand::UntilClause(w) => {
                self.list(&w.0);
                self.list(&w.1.list);
            }
            CompoundCommand::Coprocess(c) => {
                let was = self.background;
                self.background = true;
                self.command(&c.body);
                self.background = was;
            }
        }
    }

    /// Resolves a redirection: files go to `list`, standard input to `input`.
    fn redirect(&mut self, io: &IoRedirect, list: &mut Vec<Redirect>, input: &mut Option<Stdin>) {
        let reads_stdin = |fd: &Option<i32>| fd.is_none_or(|f| f == 0);
        match io {
            IoRedirect::File(fd, kind, target) => match target {
                IoFileRedirectTarget::Filename(w) => {
                    let word = self.word_no_split(&w.value);
                    let kind = match kind {
                        IoFileRedirectKind::Read => RedirectKind::Read,
                        IoFileRedirectKind::Append => RedirectKind::Append,
                        IoFileRedirectKind::ReadAndWrite => RedirectKind::ReadWrite,
                        IoFileRedirectKind::DuplicateInput => RedirectKind::Read,
                        IoFileRedirectKind::Write
                        | IoFileRedirectKind::Clobber
                        | IoFileRedirectKind::DuplicateOutput => RedirectKind::Write,
                    };
                    if kind == RedirectKind::Read && reads_stdin(fd) {
                        *input = Some(Stdin::File(word.clone()));
                    }
                    list.push(Redirect { kind, target: word });
                }
                IoFileRedirectTarget::Fd(_) => {}
                IoFileRedirectTarget::Duplicate(w) => {
                    let word = self.word_no_split(&w.value);
                    let fd_like = word.text.chars().all(|c| c.is_ascii_digit() || c == '-');
                    if !fd_like {
                        list.push(Redirect { kind: RedirectKind::Write, target: word });
                    }
                }
                IoFileRedirectTarget::ProcessSubstitution(_, sub) => {
                    self.process_substitution(sub);
                    if matches!(kind, IoFileRedirectKind::Read) && reads_stdin(fd) {
                        *input = Some(Stdin::From("a process substitution".into()));
                    }
                }
            },
            IoRedirect::HereDocument(fd, doc) => {
                let text = self.here_document(doc);
                if reads_stdin(fd) {
                    *input = Some(match text {
                        Some(t) => Stdin::Literal(t),
                        None => Stdin::From("a here-document that expands values at run time".into()),
                    });
                }
            }
            IoRedirect::HereString(fd, w) => {
                let word = self.word_no_split(&w.value);
                if reads_stdin(fd) {
                    *input = Some(match word.exact().or(word.literal.then_some(word.text.as_str())) {
                        Some(t) => Stdin::Literal(format!("{t}\n")),
                        None => Stdin::From(format!("the here-string `{}`", word.text)),
                    });
                }
            }
            IoRedirect::OutputAndError(w, append) => {
                let word = self.word_no_split(&w.value);
                let kind = if *append { RedirectKind::Append } else { RedirectKind::Write };
                list.push(Redirect { kind, target: word });
            }
        }
    }

    /// A here-document's text when it is known before running.
    fn here_document(&mut self, doc: &ast::IoHereDocument) -> Option<String> {
        let body = if doc.remove_tabs {
            doc.doc.value.lines().map(|l| l.trim_start_matches('\t')).collect::<Vec<_>>().join("\n") + "\n"
        } else {
            doc.doc.value.clone()
        };
        if !doc.requires_expansion {
            return Some(body);
        }
        let word = self.heredoc_word(&body);
        word.literal.then_some(word.text)
    }

    pub(crate) fn process_substitution(&mut self, sub: &ast::SubshellCommand) -> ShellWord {
        let saved = self.save();
        let stdin = std::mem::replace(&mut self.stdin, Stdin::Inherited);
        self.list(&sub.list);
        self.stdin = stdin;
        self.restore(saved);
        ShellWord { text: "<(...)".to_owned(), literal: false, process_substitution: true, ..ShellWord::default() }
    }

    fn simple(&mut self, sc: &SimpleCommand) -> (Option<String>, String) {
        let source = sc.to_string();
        let outer = std::mem::replace(&mut self.current, source.clone());
        let mut redirects = self.inherited.clone();
        let mut input: Option<Stdin> = None;
        let mut assigns: Vec<(String, ShellWord)> = Vec::new();
        let mut words: Vec<ShellWord> = Vec::new();
        let mut item = |w: &mut Walker, it: &CommandPrefixOrSuffixItem, words: &mut Vec<ShellWord>| match it {
            CommandPrefixOrSuffixItem::IoRedirect(io) => w.redirect(io, &mut redirects, &mut input),
            CommandPrefixOrSuffixItem::Word(word) => words.extend(w.words(&word.value)),
            CommandPrefixOrSuffixItem::AssignmentWord(a, word) => {
                if words.is_empty() {
                    let value = w.assignment_value(&a.value);
                    let name = match &a.name {
                        ast::AssignmentName::VariableName(n) | ast::AssignmentName::ArrayElementName(n, _) => n.clone(),
                    };
                    assigns.push((name, value));
                } else {
                    words.push(w.word_no_split(&word.value));
                }
            }
            CommandPrefixOrSuffixItem::ProcessSubstitution(_, sub) => words.push(w.process_substitution(sub)),
        };
        for it in sc.prefix.iter().flat_map(|p| p.0.iter()) {
            item(self, it, &mut words);
        }
        if let Some(w) = &sc.word_or_name {
            words.extend(self.words(&w.value));
        }
        for it in sc.suffix.iter().flat_map(|s| s.0.iter()) {
            item(self, it, &mut words);
        }
        for (name, value) in &assigns {
            self.shell_valued_env(name, value);
        }
        if words.is_empty() {
            // Assignments alone change the shell's variables.
            for (name, value) in assigns {
                self.set_var(&name, &value);
            }
            // `> file` alone still opens (and truncates) the file: judge it as a command without a program.
            if redirects.len() > self.inherited.len() {
                let inv = Invocation {
                    program: ShellWord::default(),
                    args: Vec::new(),
                    redirects,
                    stdin: Stdin::Inherited,
                    wrappers: Vec::new(),
                    more_args: false,
                    replace: None,
                    source,
                };
                self.push(&inv, "", Vec::new(), Vec::new());
            }
            self.current = outer;
            return (None, "an assignment".to_owned());
        }
        let program = words.remove(0);
        let stdin = input.unwrap_or_else(|| self.stdin.clone());
        let named = format!("`{}`", basename(&program.text));
        let out = self.emit(Invocation {
            program,
            args: words,
            redirects,
            stdin,
            wrappers: Vec::new(),
            more_args: false,
            replace: None,
            source,
        });
        self.current = outer;
        (out, named)
    }

    fn assignment_value(&mut self, value: &ast::AssignmentValue) -> ShellWord {
        match value {
            ast::AssignmentValue::Scalar(w) => self.word_no_split(&w.value),
            ast::AssignmentValue::Array(items) => {
                for (k, v) in items {
                    if let Some(k) = k {
                        self.word_no_split(&k.value);
                    }
                    self.word_no_split(&v.value);
                }
                ShellWord { text: "(...)".into(), ..ShellWord::default() }
            }
        }
    }

    pub(crate) fn set_var(&mut self, name: &str, value: &ShellWord) {
        if name == "IFS" {
            self.ifs_changed = true;
        }
        self.vars.insert(name.to_owned(), value.literal.then(|| Known { text: value.text.clone(), home: value.home }));
    }

    /// `GIT_SSH_COMMAND=...` and friends: the value is shell text some program runs.
    fn shell_valued_env(&mut self, name: &str, value: &ShellWord) {
        if !SHELL_VALUED_ENV.contains(&name) || value.text.is_empty() {
            return;
        }
        match value.literal {
            true => self.code(&value.text, format!("`{name}`")),
            false => {
                self.out_code_param(value, "the value of a shell-valued variable");
                self.unjudgeable(
                    K::ShellText,
                    format!("`{name}` is run as shell text and its value `{}` is computed at run time", value.text),
                    value.params.clone(),
                );
            }
        }
    }

    /// Records that a word's parameters decide what code runs (for the template checks).
    fn out_code_param(&mut self, word: &ShellWord, role: &'static str) {
        if self.code_depth == 0 {
            for p in &word.params {
                self.out.code_params.push((p.clone(), role));
            }
        }
    }

    fn push(&mut self, inv: &Invocation, program: &str, args: Vec<ShellWord>, settings: Vec<String>) {
        let function_call = inv.wrappers.is_empty() && self.functions.contains(program);
        self.out.commands.push(Command {
            program: basename(program).to_owned(),
            program_path: program.to_owned(),
            wrappers: inv.wrappers.clone(),
            args,
            settings,
            redirects: inv.redirects.clone(),
            cwd: self.cwd.clone(),
            piped: self.piped,
            background: self.background,
            function_call,
            in_function: self.function_stack.last().cloned(),
            more_args: inv.more_args,
            source: inv.source.clone(),
            via: self.via.clone(),
        });
    }

    /// Normalises one command: wrappers stripped, nested code followed. Returns its output when known.
    fn emit(&mut self, inv: Invocation) -> Option<String> {
        // A program that comes from an expansion is refused even when its value is known:
        // what runs must be readable in the text itself.
        let Some(path) = inv.program.exact().filter(|_| !inv.program.expanded).map(str::to_owned) else {
            self.out_code_param(&inv.program, "the program");
            let reason = if inv.program.expanded && inv.program.literal {
                format!("the program comes from an expansion (here `{}`) and is decided at run time", inv.program.text)
            } else if inv.program.glob.is_some() && inv.program.literal {
                format!("the program `{}` is a glob", inv.program.text)
            } else {
                format!("the program `{}` is computed at run time", inv.program.text)
            };
            self.unjudgeable(K::ComputedProgram, reason, inv.program.params.clone());
            return None;
        };
        let name = basename(&path).to_owned();
        if inv.wrappers.is_empty() && self.functions.contains(&name) {
            let args = inv.args.clone();
            self.push(&inv, &path, args, Vec::new());
            return None;
        }
        if name == "busybox" && !inv.args.is_empty() {
            let mut inv = inv;
            let program = inv.args.remove(0);
            inv.wrappers.push(name);
            inv.program = program;
            return self.emit(inv);
        }
        if let Some(w) = WRAPPERS.iter().find(|w| w.name == name) {
            return self.wrapper(inv, &path, w);
        }
        if SHELLS.contains(&name.as_str()) {
            self.shell(&inv, &name);
            self.push(&inv, &path, inv.args.clone(), Vec::new());
            return None;
        }
        if let Some(spec) = is_interpreter(&name) {
            self.interpreter(&inv, &name, spec);
            self.push(&inv, &path, inv.args.clone(), Vec::new());
            return None;
        }
        match name.as_str() {
            "eval" => self.eval(&inv),
            "source" | "." => {
                if let Some(script) = inv.args.first() {
                    self.script_operand(script, &name);
                }
            }
            "trap" => self.trap(&inv),
            "alias" => {
                for a in &inv.args {
                    if let Some((_, value)) = a.text.split_once('=') {
                        if a.literal {
                            self.code(value, "`alias`".into());
                        } else {
                            self.out_code_param(a, "an alias");
                            self.unjudgeable(
                                K::EvalText,
                                format!("the alias `{}` is computed at run time", a.text),
                                a.params.clone(),
                            );
                        }
                    }
                }
            }
            "watch" => return self.watch(inv, &path),
            "su" | "runuser" | "script" => self.dash_c(&inv, &name),
            "find" => self.find(&inv),
            "git" => {
                self.git(inv, &path);
                return None;
            }
            "cd" | "pushd" => {
                self.cd(&inv);
                return None;
            }
            "popd" => {
                self.push(&inv, &path, inv.args.clone(), Vec::new());
                self.cwd = None;
                return None;
            }
            "export" | "declare" | "typeset" | "local" | "readonly" => {
                for a in &inv.args {
                    if let Some((n, v)) = assignment(&a.text) {
                        let value = ShellWord { text: v.to_owned(), ..a.clone() };
                        self.shell_valued_env(n, &value);
                        self.set_var(n, &value);
                    }
                }
            }
            "unset" => {
                for a in &inv.args {
                    if is_name(&a.text) {
                        self.vars.insert(a.text.clone(), Some(Known::plain("")));
                    }
                }
            }
            "read" | "mapfile" | "readarray" | "getopts" => {
                for a in &inv.args {
                    if is_name(&a.text) {
                        self.vars.insert(a.text.clone(), None);
                    }
                }
            }
            _ => {}
        }
        let out = self.known_output(&inv, &name);
        self.push(&inv, &path, inv.args.clone(), Vec::new());
        out
    }

    /// The output of `echo`/`printf` of literal words and `cat` of literal input.
    fn known_output(&self, inv: &Invocation, name: &str) -> Option<String> {
        let exact: Option<Vec<&str>> = inv.args.iter().map(ShellWord::exact).collect();
        let exact = exact?;
        match name {
            "echo" => {
                let words: Vec<&str> = exact.into_iter().skip_while(|w| matches!(*w, "-n" | "-e" | "-E")).collect();
                Some(words.join(" ") + "\n")
            }
            "printf" if exact.len() == 1 && !exact[0].contains('%') => Some(exact[0].replace("\\n", "\n")),
            "cat" if exact.is_empty() => match &inv.stdin {
                Stdin::Literal(t) => Some(t.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    fn wrapper(&mut self, mut inv: Invocation, path: &str, w: &Wrapper) -> Option<String> {
        let args = std::mem::take(&mut inv.args);
        let mut i = 0;
        let mut replace: Option<String> = None;
        let mut split_string: Option<ShellWord> = None;
        let mut runs = true;
        while let Some(a) = args.get(i) {
            let t = a.text.as_str();
            if t == "--" {
                i += 1;
                break;
            }
            if w.no_run.contains(&t) {
                runs = false;
            }
            if let Some(long) = t.strip_prefix("--") {
                let (n, has_value) = long.split_once('=').map_or((long, false), |(n, _)| (n, true));
                if w.name == "env" && n == "split-string" {
                    split_string = if has_value {
                        Some(ShellWord { text: long[n.len() + 1..].to_owned(), ..a.clone() })
                    } else {
                        args.get(i + 1).cloned()
                    };
                }
                if w.name == "xargs" && n == "replace" {
                    replace = Some(long.split_once('=').map_or("{}", |(_, v)| v).to_owned());
                }
                i += if !has_value && w.long_arg.contains(&n) { 2 } else { 1 };
                continue;
            }
            if t.len() > 1 && t.starts_with('-') {
                let mut consumed = 1;
                for (k, c) in t.char_indices().skip(1) {
                    if w.short_arg.contains(c) {
                        let rest = &t[k + c.len_utf8()..];
                        let value = if rest.is_empty() {
                            consumed = 2;
                            args.get(i + 1).cloned()
                        } else {
                            Some(ShellWord { text: rest.to_owned(), ..a.clone() })
                        };
                        if w.name == "xargs" && c == 'I' {
                            replace = value.map(|v| v.text);
                        } else if w.name == "env" && c == 'S' {
                            split_string = value;
                        }
                        break;
                    }
                    if w.name == "xargs" && c == 'i' {
                        replace = Some("{}".into());
                    }
                    if w.name == "sudo" && c == 'e' {
                        // `sudo -e FILE` edits files: judge them as the files of `sudoedit`.
                        inv.program = ShellWord::lit("sudoedit");
                        inv.args = args[i + 1..].to_vec();
                        inv.wrappers.push(w.name.to_owned());
                        return self.emit(inv);
                    }
                }
                i += consumed;
                continue;
            }
            if w.assignments && assignment(t).is_some() {
                if let Some((n, v)) = assignment(t) {
                    let value = ShellWord { text: v.to_owned(), ..a.clone() };
                    self.shell_valued_env(n, &value);
                }
                i += 1;
                continue;
            }
            break;
        }
        let rest = args.get(i + w.leading..).map(<[ShellWord]>::to_vec).unwrap_or_default();
        if let Some(text) = split_string {
            // `env -S 'cmd args'` splits its text into the command: read it as shell words.
            inv.wrappers.push(w.name.to_owned());
            inv.args = args;
            self.push(&inv, path, inv.args.clone(), Vec::new());
            if text.literal {
                let joined = std::iter::once(text.text.clone())
                    .chain(rest.iter().map(|r| r.text.clone()))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.code(&joined, "`env -S`".into());
            } else {
                self.out_code_param(&text, "the text of `env -S`");
                self.unjudgeable(
                    K::ShellText,
                    format!("the text given to `env -S` (`{}`) is computed at run time", text.text),
                    text.params.clone(),
                );
            }
            return None;
        }
        if !runs || rest.is_empty() {
            if matches!(w.name, "sudo" | "doas")
                && runs
                && args.iter().any(|a| matches!(a.text.as_str(), "-s" | "-i" | "--shell" | "--login"))
            {
                // `sudo -s` alone is a shell that reads its commands from standard input.
                self.stdin_code(&inv, w.name, true);
            }
            inv.args = args;
            let out = self.known_output(&inv, w.name);
            self.push(&inv, path, inv.args.clone(), Vec::new());
            return out;
        }
        let mut rest = rest;
        let program = rest.remove(0);
        inv.wrappers.push(w.name.to_owned());
        inv.program = program;
        inv.args = rest;
        if w.name == "xargs" {
            inv.more_args = true;
            inv.replace = replace;
        }
        self.emit(inv)
    }

    /// A script file given to a shell or `source`: fine when it is a file, not when it is generated text.
    fn script_operand(&mut self, script: &ShellWord, name: &str) {
        self.out_code_param(script, "the script");
        let stdin_like = ["/dev/stdin", "/proc/self/fd/0", "/dev/fd/0", "-"];
        if script.process_substitution || stdin_like.contains(&script.text.as_str()) {
            self.unjudgeable(
                K::GeneratedScript,
                format!("`{name}` would run generated text (`{}`)", script.text),
                script.params.clone(),
            );
        }
    }

    fn shell(&mut self, inv: &Invocation, name: &str) {
        let args = &inv.args;
        let (mut i, mut c, mut s) = (0, false, false);
        while let Some(a) = args.get(i) {
            let t = a.text.as_str();
            if !a.literal {
                break;
            }
            if t == "--" || t == "-" {
                i += 1;
                break;
            }
            if t.starts_with("--") {
                i += if matches!(t, "--rcfile" | "--init-file") { 2 } else { 1 };
                continue;
            }
            if t.len() > 1 && (t.starts_with('-') || t.starts_with('+')) {
                let mut consumed = 1;
                for ch in t.chars().skip(1) {
                    match ch {
                        'c' => c = true,
                        's' => s = true,
                        'o' | 'O' => consumed = 2,
                        _ => {}
                    }
                }
                i += consumed;
                continue;
            }
            break;
        }
        let operands = args.get(i..).unwrap_or_default();
        if c {
            let Some(text) = operands.first() else { return };
            self.code_text(inv, text, &format!("`{name} -c`"));
        } else if let Some(script) = operands.first().filter(|_| !s) {
            self.script_operand(script, name);
        } else {
            self.stdin_code(inv, name, true);
        }
    }

    /// Text some program runs as shell code: followed when literal, refused when computed.
    fn code_text(&mut self, inv: &Invocation, text: &ShellWord, via: &str) {
        if let Some(r) = inv.replace.as_deref().filter(|r| text.text.contains(r)) {
            self.unjudgeable(
                K::ShellText,
                format!("the text of {via} contains `{r}`, which is replaced by input at run time"),
                text.params.clone(),
            );
        } else if text.literal {
            self.code(&text.text, via.to_owned());
        } else {
            self.out_code_param(text, "shell text");
            self.unjudgeable(
                K::ShellText,
                format!("the text given to {via} (`{}`) is computed at run time", text.text),
                text.params.clone(),
            );
        }
    }

    /// A shell or interpreter that reads its program from standard input.
    fn stdin_code(&mut self, inv: &Invocation, name: &str, is_shell: bool) {
        match &inv.stdin {
            Stdin::Inherited => {}
            Stdin::Literal(text) if is_shell => {
                let text = text.clone();
                self.code(&text, format!("text given to `{name}` on its standard input"));
            }
            Stdin::Literal(_) => {}
            Stdin::File(file) => self.script_operand(file, name),
            Stdin::From(from) => self.unjudgeable(
                K::PipedIntoShell,
                format!("the output of {from} is run as code by `{name}`"),
                Vec::new(),
            ),
        }
    }

    fn interpreter(&mut self, inv: &Invocation, name: &str, spec: &(&str, &str, &str)) {
        let (_, code_flags, arg_flags) = *spec;
        let mut i = 0;
        while let Some(a) = inv.args.get(i) {
            let t = a.text.as_str();
            if t == "-" {
                break;
            }
            if t == "--" {
                if let Some(script) = inv.args.get(i + 1) {
                    self.out_code_param(script, "the script");
                    if script.process_substitution {
                        self.script_operand(script, name);
                    }
                    return;
                }
                break;
            }
            if t.starts_with("--") {
                if matches!(t, "--eval" | "--print") {
                    if let Some(code) = inv.args.get(i + 1) {
                        self.out_code_param(code, "interpreter code");
                    }
                    return;
                }
                i += 1;
                continue;
            }
            if let Some(flags) = t.strip_prefix('-').filter(|f| !f.is_empty()) {
                for (k, ch) in flags.char_indices() {
                    if code_flags.contains(ch) {
                        let attached = &flags[k + ch.len_utf8()..];
                        if attached.is_empty() {
                            if let Some(code) = inv.args.get(i + 1) {
                                self.out_code_param(code, "interpreter code");
                            }
                        } else {
                            self.out_code_param(a, "interpreter code");
                        }
                        return;
                    }
                    if arg_flags.contains(ch) {
                        if flags[k + ch.len_utf8()..].is_empty() {
                            i += 1;
                        }
                        break;
                    }
                }
                i += 1;
                continue;
            }
            // A script file: it runs, but it is a file like any program.
            self.out_code_param(a, "the script");
            if a.process_substitution {
                self.script_operand(a, name);
            }
            return;
        }
        self.stdin_code(inv, name, false);
    }

    fn eval(&mut self, inv: &Invocation) {
        if inv.args.is_empty() {
            return;
        }
        if inv.args.iter().all(|a| a.literal) {
            let text = inv.args.iter().map(|a| a.text.as_str()).collect::<Vec<_>>().join(" ");
            self.code(&text, "`eval`".into());
        } else {
            let params: Vec<String> = inv.args.iter().flat_map(|a| a.params.clone()).collect();
            for a in &inv.args {
                self.out_code_param(a, "the text of `eval`");
            }
            let shown = inv.args.iter().map(|a| a.text.as_str()).collect::<Vec<_>>().join(" ");
            self.unjudgeable(K::EvalText, format!("`eval` runs text computed at run time (`{shown}`)"), params);
        }
    }

    fn trap(&mut self, inv: &Invocation) {
        let Some(first) = inv.args.first() else { return };
        if inv.args.len() < 2 || matches!(first.text.as_str(), "-" | "--" | "-p" | "-l" | "") {
            return;
        }
        if first.literal {
            self.code(&first.text, "`trap`".into());
        } else {
            self.out_code_param(first, "the text of `trap`");
            self.unjudgeable(
                K::EvalText,
                format!("the `trap` text `{}` is computed at run time", first.text),
                first.params.clone(),
            );
        }
    }

    fn watch(&mut self, mut inv: Invocation, path: &str) -> Option<String> {
        let mut i = 0;
        let mut exec = false;
        while let Some(a) = inv.args.get(i) {
            match a.text.as_str() {
                "-n" | "--interval" | "-q" | "--equexit" => i += 2,
                "-x" | "--exec" => {
                    exec = true;
                    i += 1;
                }
                t if t.starts_with('-') => i += 1,
                _ => break,
            }
        }
        let rest: Vec<ShellWord> = inv.args.get(i..).map(<[ShellWord]>::to_vec).unwrap_or_default();
        self.push(&inv, path, inv.args.clone(), Vec::new());
        if rest.is_empty() {
            return None;
        }
        if exec {
            let mut rest = rest;
            inv.program = rest.remove(0);
            inv.args = rest;
            inv.wrappers.push("watch".into());
            return self.emit(inv);
        }
        let text = ShellWord {
            text: rest.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join(" "),
            literal: rest.iter().all(|r| r.literal),
            params: rest.iter().flat_map(|r| r.params.clone()).collect(),
            ..ShellWord::default()
        };
        self.code_text(&inv, &text, "`watch`");
        None
    }

    /// `su -c TEXT`, `runuser -c TEXT`, `script -c TEXT`.
    fn dash_c(&mut self, inv: &Invocation, name: &str) {
        let mut it = inv.args.iter();
        while let Some(a) = it.next() {
            let t = a.text.as_str();
            let text =
                if t == "-c" || t == "--command" || (t.starts_with('-') && !t.starts_with("--") && t.ends_with('c')) {
                    it.next().cloned()
                } else {
                    t.strip_prefix("--command=").map(|v| ShellWord { text: v.to_owned(), ..a.clone() })
                };
            if let Some(text) = text {
                self.code_text(inv, &text, &format!("`{name} -c`"));
                return;
            }
        }
        if name != "script" {
            // `su` without `-c` is a shell that reads its commands from standard input.
            self.stdin_code(inv, name, true);
        }
    }

    fn cd(&mut self, inv: &Invocation) {
        let target = inv.args.iter().find(|a| !(a.text.starts_with('-') && a.text.len() > 1));
        let next = match target {
            None => Some("~".to_owned()),
            Some(t) if t.text == "-" => None,
            Some(t) if t.exact().is_some() => self.cwd.as_ref().map(|c| super::paths::join(c, &t.text)),
            Some(_) => None,
        };
        self.push(inv, &inv.program.text.clone(), inv.args.clone(), Vec::new());
        self.cwd = next;
    }

    fn find(&mut self, inv: &Invocation) {
        let (roots, expr) = super::options::find_parts(&inv.args);
        let mut i = 0;
        while let Some(a) = expr.get(i) {
            i += 1;
            if !matches!(a.text.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                continue;
            }
            let start = i;
            while expr.get(i).is_some_and(|w| !matches!(w.text.as_str(), ";" | "+")) {
                i += 1;
            }
            let inner = expr.get(start..i).unwrap_or_default();
            i += 1;
            let Some((program, rest)) = inner.split_first() else { continue };
            let mut wrappers = inv.wrappers.clone();
            wrappers.push("find".into());
            if program.exact().is_some_and(|p| SHELLS.contains(&basename(p))) {
                // A shell's `{}` may be a script file or part of its code: `{}` in `-c` text is refused.
                self.via.push("`find -exec`".into());
                self.emit(Invocation {
                    program: program.clone(),
                    args: rest.to_vec(),
                    redirects: Vec::new(),
                    stdin: Stdin::Inherited,
                    wrappers,
                    more_args: true,
                    replace: Some("{}".into()),
                    source: inv.source.clone(),
                });
                self.via.pop();
                continue;
            }
            // `{}` stands for every file under each root: judge the command on the roots.
            for root in &roots {
                let args: Vec<ShellWord> = rest
                    .iter()
                    .map(|w| match w.text.as_str() {
                        "{}" => root.clone(),
                        t if t.contains("{}") => ShellWord {
                            text: t.replace("{}", &root.text),
                            literal: w.literal && root.literal,
                            ..w.clone()
                        },
                        _ => w.clone(),
                    })
                    .collect();
                let wrappers = wrappers.clone();
                self.via.push("`find -exec`".into());
                self.emit(Invocation {
                    program: program.clone(),
                    args,
                    redirects: Vec::new(),
                    stdin: Stdin::Inherited,
                    wrappers,
                    more_args: true,
                    replace: None,
                    source: inv.source.clone(),
                });
                self.via.pop();
            }
        }
    }

    fn git(&mut self, inv: Invocation, path: &str) {
        let args = &inv.args;
        let mut settings: Vec<String> = Vec::new();
        let mut setting_words: Vec<ShellWord> = Vec::new();
        let mut i = 0;
        while let Some(a) = args.get(i) {
            let t = a.text.as_str();
            match t {
                "-c" => {
                    if let Some(v) = args.get(i + 1) {
                        settings.push(v.text.clone());
                        setting_words.push(v.clone());
                    }
                    i += 2;
                }
                "-C" | "--git-dir" | "--work-tree" | "--namespace" | "--config-env" | "--super-prefix"
                | "--attr-source" => i += 2,
                _ if t.starts_with("--") && t.contains('=') => i += 1,
                _ if t.starts_with('-') => i += 1,
                _ => break,
            }
        }
        let rest: Vec<ShellWord> = args.get(i..).map(<[ShellWord]>::to_vec).unwrap_or_default();
        for word in &setting_words {
            let Some((key, value)) = word.text.split_once('=') else { continue };
            let alias = key.to_ascii_lowercase().strip_prefix("alias.").map(str::to_owned);
            let shell_text = match &alias {
                Some(_) => value.strip_prefix('!'),
                None => git_setting_runs_shell(key, value).then_some(value.trim_start_matches('!')),
            };
            if let Some(text) = shell_text {
                let w = ShellWord { text: text.to_owned(), ..word.clone() };
                self.code_text(&inv, &w, &format!("`git -c {key}`"));
            } else if let Some(name) = alias.filter(|n| rest.first().is_some_and(|r| &r.text == n)) {
                // `git -c alias.x='reset --hard' x`: the alias is the subcommand.
                if word.literal {
                    self.code(&format!("git {value}"), format!("the git alias `{name}`"));
                } else {
                    self.unjudgeable(
                        K::ShellText,
                        format!("the git alias `{name}` is computed at run time"),
                        word.params.clone(),
                    );
                }
            }
        }
        self.push(&inv, path, rest, settings);
    }
}
