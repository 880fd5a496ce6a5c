//! The structured denylist (HSK-TERM-002, issue 11): rules over a normalised command's program, options and operands.
//!
//! Each rule has an id an operator can name (`terminal.disabled_rules`) and a
//! reason that names the offending simple command. Rules never look at the
//! raw text: `echo "git reset --hard"` is an `echo`, and `rm -r -f ~` is an
//! `rm` whose options are `recursive` and `force` and whose operand is the
//! home directory.

use super::options::{self, Parsed};
use super::paths::{Located, Place, locate};
use super::{Analysis, Command, RedirectKind, ShellWord};

/// What the rules know about where a command runs. Paths are text; nothing is read from disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The workspace root, absolute, when known.
    pub workspace: Option<&'a str>,
    /// Where the command starts, relative to the workspace root (`.`, `src`).
    pub cwd: &'a str,
    /// Steward's data directory: absolute, or relative to the workspace root.
    pub data_dir: Option<&'a str>,
    /// The home directory, absolute, when known.
    pub home: Option<&'a str>,
}

/// A rule that a command breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's id (see [`RULES`]).
    pub rule: &'static str,
    /// The offending simple command, as shown to a person.
    pub command: String,
    /// What it would do.
    pub reason: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is denied by denylist rule `{}`: {}", self.command, self.rule, self.reason)
    }
}

/// Every rule: id and what it refuses.
pub const RULES: &[(&str, &str)] = &[
    ("git-reset-hard", "`git reset --hard` throws away uncommitted work"),
    ("git-clean-force", "`git clean -f` deletes untracked files"),
    ("git-push-force", "a forced push (`--force`, `-f`, `--force-with-lease`, `+refspec`) rewrites a remote's history"),
    ("git-push-delete", "`git push --delete`, `:branch` or `--prune` deletes remote branches"),
    ("git-push-mirror", "`git push --mirror` overwrites every ref of a remote"),
    ("git-discard-changes", "`git checkout -- .`, `git checkout -f`, `git restore .` throw away every local change"),
    (
        "git-history-rewrite",
        "`git filter-branch`, `filter-repo`, `reflog expire`, `gc --prune=now` rewrite or drop history",
    ),
    ("rm-outside-workspace", "`rm` of `/`, `/*`, `~`, `$HOME`, `..` or any path outside the workspace"),
    ("rm-no-preserve-root", "`rm --no-preserve-root`"),
    ("find-delete-outside", "`find -delete` under `/`, the home directory or outside the workspace"),
    ("write-outside-workspace", "writing, moving or changing files outside the workspace and temporary directories"),
    ("cd-outside-workspace", "`cd` to a directory outside the workspace"),
    ("disk-device", "reading or writing a disk or memory device (`dd of=/dev/sda`, `> /dev/nvme0n1`)"),
    ("disk-format", "`mkfs`, `fdisk`, `wipefs` and other partitioning or formatting tools"),
    ("power", "`shutdown`, `reboot`, `halt`, `poweroff`, `init 0`, `systemctl poweroff`"),
    ("kill-all", "`kill -9 -1`: signalling every process"),
    ("fork-bomb", "a function that starts itself in a pipeline or in the background"),
    ("read-credentials", "a credential store (`~/.ssh`, `~/.aws`, `~/.netrc`, `/etc/shadow`, ...) as an operand"),
    ("data-dir", "touching Steward's data directory"),
    ("human-decision", "`steward gate`, `approve` or `reject` from a command: human decisions come from humans"),
    ("network-shell", "a shell over the network (`/dev/tcp/...`, `nc -e`, `socat exec:`)"),
    ("unparseable", "text the shell parser cannot parse"),
    ("computed-program", "a program chosen at run time (`$G reset`, `$(echo rm) -rf /`)"),
    ("eval-text", "`eval` (or `trap`, `alias`) of text computed at run time"),
    ("shell-text", "`sh -c` (or `su -c`, `watch`, a shell-valued setting) of text computed at run time"),
    ("piped-into-shell", "a program's output run as code (`curl ... | sh`, `base64 -d | bash`)"),
    ("generated-script", "a generated script (`source <(...)`, `bash /dev/stdin`)"),
    ("too-deep", "commands nested too deeply to follow"),
];

/// Programs whose operands are text, not files: they are not checked as paths.
const TEXT_ONLY: &[&str] = &[
    "echo", "printf", "true", "false", ":", "test", "[", "expr", "seq", "sleep", "exit", "return", "shift", "set",
    "export", "local", "declare", "typeset", "readonly", "unset", "alias", "unalias", "let", "type", "which",
    "command", "hash", "umask", "jobs", "wait", "basename", "dirname", "date", "yes", "printenv", "read", "trap",
    "eval",
];

/// Partitioning and formatting tools.
const DISK_FORMAT: &[&str] = &["mke2fs", "mkswap", "wipefs", "sfdisk", "sgdisk", "blkdiscard", "mkdosfs", "badblocks"];

/// Programs that only describe devices.
const DEVICE_INFO: &[&str] =
    &["ls", "lsblk", "blkid", "df", "stat", "file", "findmnt", "udevadm", "mount", "test", "["];

/// Pathspecs that mean "everything".
const ALL_PATHS: &[&str] = &[".", "./", ":/", ":/*", "*", ":(top)", ":(top).", ":(top)*", ":/."];

struct Judge<'c, 'a> {
    ctx: &'c Context<'a>,
    out: Vec<Finding>,
}

impl Judge<'_, '_> {
    fn deny(&mut self, rule: &'static str, cmd: &Command, reason: impl Into<String>) {
        self.out.push(Finding { rule, command: cmd.shown(), reason: reason.into() });
    }

    fn locate(&self, cmd: &Command, w: &ShellWord) -> Located {
        locate(w, cmd.cwd.as_deref(), self.ctx)
    }

    /// Operands and option values that name files.
    fn paths(&self, cmd: &Command) -> Vec<ShellWord> {
        let mut out = Vec::new();
        for a in &cmd.args {
            let t = a.text.as_str();
            let assignment_like = |k: &str| {
                k.starts_with('-') || (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            };
            let value = if let Some((k, v)) = t.split_once('=').filter(|(k, _)| assignment_like(k)) {
                // `--key-file=~/.ssh/id`, `if=/dev/sda`: the value is the path.
                Some(ShellWord {
                    text: v.to_owned(),
                    home: v.starts_with('~') && !a.text.contains(['"', '\'']),
                    known: a.known.saturating_sub(k.len() + 1),
                    glob: a.glob.and_then(|g| g.checked_sub(k.len() + 1)),
                    leading_param: false,
                    ..a.clone()
                })
            } else {
                None
            };
            let w = value.unwrap_or_else(|| a.clone());
            // curl's `@file` reads a file.
            if let Some(file) = w.text.strip_prefix('@') {
                out.push(ShellWord {
                    text: file.to_owned(),
                    home: file.starts_with('~') && w.home,
                    known: w.known.saturating_sub(1),
                    glob: w.glob.and_then(|g| g.checked_sub(1)),
                    ..w.clone()
                });
            }
            out.push(w);
        }
        out
    }

    fn command(&mut self, cmd: &Command) {
        let name = cmd.program.as_str();
        if !TEXT_ONLY.contains(&name) {
            for w in self.paths(cmd) {
                let at = self.locate(cmd, &w);
                self.common(cmd, &at, name, false);
            }
        }
        for r in &cmd.redirects {
            let at = self.locate(cmd, &r.target);
            let writes = r.kind != RedirectKind::Read;
            self.common(cmd, &at, name, true);
            if writes && outside(at.place) {
                self.deny("write-outside-workspace", cmd, format!("writes to `{}`, outside the workspace", at.path));
            }
        }
        match name {
            "rm" => self.rm(cmd),
            "git" => self.git(cmd),
            "find" => self.find(cmd),
            "cd" | "pushd" => {
                if let Some(t) = cmd.args.iter().find(|a| !(a.text.starts_with('-') && a.text.len() > 1)) {
                    let at = self.locate(cmd, t);
                    if outside(at.place) && at.place != Place::TempRoot {
                        self.deny("cd-outside-workspace", cmd, format!("`{}` is outside the workspace", at.path));
                    }
                } else if cmd.args.is_empty() {
                    self.deny("cd-outside-workspace", cmd, "`cd` alone goes to the home directory");
                }
            }
            "shutdown" | "reboot" | "halt" | "poweroff" | "killall5" => {
                self.deny("power", cmd, format!("`{name}` stops the machine or every process"));
            }
            "init" | "telinit" if cmd.args.iter().any(|a| matches!(a.text.as_str(), "0" | "6" | "1" | "s" | "S")) => {
                self.deny("power", cmd, "changing the runlevel stops or restarts the machine");
            }
            "systemctl" => {
                const VERBS: &[&str] = &[
                    "poweroff",
                    "reboot",
                    "halt",
                    "kexec",
                    "suspend",
                    "hibernate",
                    "hybrid-sleep",
                    "suspend-then-hibernate",
                    "rescue",
                    "emergency",
                    "soft-reboot",
                    "default",
                    "isolate",
                ];
                if let Some(v) = cmd.args.iter().find(|a| VERBS.contains(&a.text.as_str())) {
                    self.deny("power", cmd, format!("`systemctl {}` stops or restarts the machine", v.text));
                }
            }
            "kill" => self.kill(cmd),
            "fdisk" | "parted" | "gdisk" | "cfdisk"
                if !cmd.args.iter().any(|a| matches!(a.text.as_str(), "-l" | "--list")) =>
            {
                self.deny("disk-format", cmd, format!("`{name}` changes partition tables"));
            }
            "cryptsetup"
                if cmd.args.iter().any(|a| matches!(a.text.as_str(), "luksFormat" | "erase" | "luksErase")) =>
            {
                self.deny("disk-format", cmd, "`cryptsetup` would destroy a volume's keys");
            }
            n if n.starts_with("mkfs") || DISK_FORMAT.contains(&n) => {
                self.deny("disk-format", cmd, format!("`{n}` formats or wipes a disk"));
            }
            "steward" | "steward-cli" => self.steward(cmd),
            "cargo" => {
                // `cargo run -- gate ...` is the same binary.
                if let Some(k) = cmd.args.iter().position(|a| a.text == "--")
                    && cmd.args.first().is_some_and(|a| a.text == "run")
                {
                    let rest = Command { args: cmd.args[k + 1..].to_vec(), ..cmd.clone() };
                    self.steward(&rest);
                }
            }
            "nc" | "ncat" | "netcat"
                if cmd.args.iter().any(|a| matches!(a.text.as_str(), "-e" | "-c" | "--exec" | "--sh-exec")) =>
            {
                self.deny("network-shell", cmd, "`-e`/`-c` gives a shell to whoever is on the other end");
            }
            "socat" => {
                let lower: Vec<String> = cmd.args.iter().map(|a| a.text.to_ascii_lowercase()).collect();
                if lower.iter().any(|a| a.starts_with("exec:") || a.starts_with("system:")) {
                    self.deny("network-shell", cmd, "`socat exec:` gives a shell to whoever is on the other end");
                }
            }
            _ => {}
        }
        self.writes(cmd);
        if cmd.in_function.as_deref() == Some(name) && (cmd.piped || cmd.background) {
            self.deny(
                "fork-bomb",
                cmd,
                format!("the function `{name}` starts copies of itself until the machine runs out of processes"),
            );
        }
    }

    /// Rules every operand and redirect meets, whatever the program.
    fn common(&mut self, cmd: &Command, at: &Located, name: &str, redirect: bool) {
        match at.place {
            Place::Credential => {
                self.deny("read-credentials", cmd, format!("`{}` is a credential store", at.path));
            }
            Place::DataDir => {
                self.deny("data-dir", cmd, format!("`{}` is Steward's data directory", at.path));
            }
            Place::Device if redirect || !DEVICE_INFO.contains(&name) => {
                self.deny("disk-device", cmd, format!("`{}` is a disk or memory device", at.path));
            }
            Place::Network => {
                self.deny("network-shell", cmd, format!("`{}` opens a network connection from the shell", at.path));
            }
            _ => {}
        }
    }

    fn rm(&mut self, cmd: &Command) {
        let p = options::parse(&cmd.args, &options::RM);
        if p.has("no-preserve-root") {
            self.deny("rm-no-preserve-root", cmd, "`--no-preserve-root` lets `rm` delete `/`");
        }
        for o in &p.operands {
            let at = self.locate(cmd, o);
            if outside(at.place) {
                self.deny("rm-outside-workspace", cmd, format!("removes {}, {}", shown(o, &at), describe(at.place)));
            }
        }
    }

    fn find(&mut self, cmd: &Command) {
        let (roots, expr) = options::find_parts(&cmd.args);
        if !expr.iter().any(|e| e.text == "-delete") {
            return;
        }
        for r in &roots {
            let at = self.locate(cmd, r);
            if outside(at.place) {
                self.deny(
                    "find-delete-outside",
                    cmd,
                    format!("deletes files under {}, {}", shown(r, &at), describe(at.place)),
                );
            }
        }
    }

    /// Programs that write their operands: the targets must stay inside the workspace or temp.
    fn writes(&mut self, cmd: &Command) {
        let name = cmd.program.as_str();
        let targets: Vec<ShellWord> = match name {
            "rmdir" | "unlink" | "touch" | "mkdir" | "tee" | "truncate" | "shred" => {
                options::parse(&cmd.args, &options::WRITES_ALL).operands
            }
            "chmod" | "chown" | "chgrp" => {
                let p = options::parse(&cmd.args, &options::WRITES_ALL);
                let skip = usize::from(!p.has("reference"));
                p.operands.into_iter().skip(skip).collect()
            }
            "mv" => options::parse(&cmd.args, &options::COPIES).operands,
            "cp" | "install" | "ln" | "rsync" | "scp" => {
                let p = options::parse(&cmd.args, &options::COPIES);
                match p.value("target-directory") {
                    Some(t) => vec![t.clone()],
                    None if p.operands.len() >= 2 => p.operands.last().cloned().into_iter().collect(),
                    None => Vec::new(),
                }
            }
            "dd" => cmd
                .args
                .iter()
                .filter_map(|a| {
                    a.text.strip_prefix("of=").map(|v| ShellWord {
                        text: v.to_owned(),
                        home: v.starts_with('~'),
                        known: a.known.saturating_sub(3),
                        glob: None,
                        ..a.clone()
                    })
                })
                .collect(),
            "sed" => {
                let p = options::parse(&cmd.args, &options::SED);
                if !p.has("in-place") {
                    return;
                }
                let script_given = p.has("expression") || p.has("file");
                p.operands.into_iter().skip(usize::from(!script_given)).collect()
            }
            "curl" | "wget" => {
                let p = options::parse(&cmd.args, &options::DOWNLOAD);
                ["output", "output-document", "directory-prefix"].iter().filter_map(|k| p.value(k).cloned()).collect()
            }
            _ => return,
        };
        for t in &targets {
            let at = self.locate(cmd, t);
            if outside(at.place) {
                self.deny(
                    "write-outside-workspace",
                    cmd,
                    format!("writes to {}, {}", shown(t, &at), describe(at.place)),
                );
            }
        }
    }

    fn kill(&mut self, cmd: &Command) {
        let mut args = cmd.args.iter().map(|a| a.text.as_str()).peekable();
        match args.peek() {
            Some(&("-s" | "-n" | "--signal")) => {
                args.next();
                args.next();
            }
            Some(s) if s.starts_with('-') && *s != "-1" && *s != "--" => {
                args.next();
            }
            Some(&"-1") if cmd.args.len() > 1 => {
                // `kill -1 PID` is signal 1 (HUP), not "every process".
                args.next();
            }
            _ => {}
        }
        if args.any(|a| a == "-1") {
            self.deny("kill-all", cmd, "process id -1 is every process the user may signal");
        }
    }

    fn steward(&mut self, cmd: &Command) {
        let mut it = cmd.args.iter().map(|a| a.text.as_str());
        while let Some(a) = it.next() {
            match a {
                "--data-dir" | "--stall-threshold" | "--heartbeat-secs" | "--config" => {
                    it.next();
                }
                _ if a.starts_with('-') => {}
                "gate" | "approve" | "reject" => {
                    self.deny(
                        "human-decision",
                        cmd,
                        format!("`steward {a}` records a human decision; a command running in a step is not a human"),
                    );
                    return;
                }
                _ => return,
            }
        }
    }

    fn git(&mut self, cmd: &Command) {
        let Some((sub, rest)) = cmd.args.split_first() else { return };
        let setting = |key: &str, value: &str| {
            cmd.settings.iter().any(|s| {
                s.split_once('=').is_some_and(|(k, v)| k.eq_ignore_ascii_case(key) && v.eq_ignore_ascii_case(value))
            })
        };
        match sub.text.as_str() {
            "reset" if options::parse(rest, &options::GIT_RESET).has("hard") => {
                self.deny("git-reset-hard", cmd, "`--hard` throws away uncommitted changes");
            }
            "clean" => {
                let p = options::parse(rest, &options::GIT_CLEAN);
                let forced = p.has("force") || setting("clean.requireForce", "false");
                if forced && !p.has("dry-run") && !p.has("interactive") {
                    self.deny("git-clean-force", cmd, "deletes untracked files, which git cannot bring back");
                }
            }
            "push" => self.git_push(cmd, rest),
            "checkout" => {
                let p = options::parse(rest, &options::GIT_CHECKOUT);
                if p.has("force") {
                    self.deny("git-discard-changes", cmd, "`checkout --force` throws away local changes");
                } else if let Some(all) = everything(&p) {
                    self.deny(
                        "git-discard-changes",
                        cmd,
                        format!("checking out `{all}` throws away every local change"),
                    );
                }
            }
            "restore" => {
                let p = options::parse(rest, &options::GIT_RESTORE);
                let worktree = p.has("worktree") || !p.has("staged");
                if let Some(all) = everything(&p).filter(|_| worktree) {
                    self.deny("git-discard-changes", cmd, format!("restoring `{all}` throws away every local change"));
                }
            }
            "switch" => {
                let p = options::parse(rest, &options::GIT_SWITCH);
                if p.has("discard-changes") || p.has("force") {
                    self.deny("git-discard-changes", cmd, "`switch --discard-changes` throws away local changes");
                }
            }
            "stash" if rest.first().is_some_and(|a| a.text == "clear") => {
                self.deny("git-history-rewrite", cmd, "`stash clear` drops every stash");
            }
            "filter-branch" | "filter-repo" => {
                self.deny("git-history-rewrite", cmd, format!("`{}` rewrites history", sub.text));
            }
            "reflog" if rest.first().is_some_and(|a| matches!(a.text.as_str(), "expire" | "delete")) => {
                self.deny("git-history-rewrite", cmd, "dropping reflog entries removes the way back to lost commits");
            }
            "gc" => {
                let p = options::parse(rest, &options::GIT_GC);
                if p.values.iter().any(|(k, v)| k == "prune" && matches!(v.text.as_str(), "now" | "all")) {
                    self.deny("git-history-rewrite", cmd, "`gc --prune=now` deletes unreachable commits at once");
                }
            }
            _ => {}
        }
    }

    fn git_push(&mut self, cmd: &Command, rest: &[ShellWord]) {
        let p = options::parse(rest, &options::GIT_PUSH);
        if p.has("dry-run") {
            return;
        }
        let refspecs = p.operands.get(1..).unwrap_or_default();
        if p.has("force") || p.has("force-with-lease") || p.has("force-if-includes") {
            self.deny("git-push-force", cmd, "a forced push rewrites the remote's history");
        } else if let Some(r) = refspecs.iter().find(|r| r.text.starts_with('+')) {
            self.deny("git-push-force", cmd, format!("`{}` forces the update of a remote branch", r.text));
        }
        if p.has("delete") || p.has("prune") {
            self.deny("git-push-delete", cmd, "deletes branches on the remote");
        } else if let Some(r) = refspecs.iter().find(|r| r.text.starts_with(':') && r.text.len() > 1) {
            self.deny("git-push-delete", cmd, format!("`{}` deletes a branch on the remote", r.text));
        }
        if p.has("mirror") {
            self.deny("git-push-mirror", cmd, "`--mirror` overwrites and deletes every ref on the remote");
        }
    }
}

/// A pathspec operand that means the whole tree.
fn everything(p: &Parsed) -> Option<String> {
    p.operands.iter().find(|o| ALL_PATHS.contains(&o.text.as_str())).map(|o| o.text.clone())
}

/// An operand as written, and where it resolves when that differs.
fn shown(w: &ShellWord, at: &Located) -> String {
    if w.text == at.path { format!("`{}`", w.text) } else { format!("`{}` (`{}`)", w.text, at.path) }
}

fn outside(place: Place) -> bool {
    matches!(place, Place::Root | Place::Home | Place::Outside | Place::MaybeRoot | Place::TempRoot)
}

fn describe(place: Place) -> &'static str {
    match place {
        Place::Root => "the whole filesystem",
        Place::Home => "the home directory",
        Place::MaybeRoot => "which is `/` when the variable is empty",
        Place::TempRoot => "the temporary directory every process shares",
        _ => "outside the workspace",
    }
}

/// Judges every command found, and refuses what cannot be judged. Findings come in the order found.
pub fn judge(analysis: &Analysis, ctx: &Context<'_>) -> Vec<Finding> {
    let mut j = Judge { ctx, out: Vec::new() };
    for u in &analysis.unjudgeable {
        let mut command = format!("`{}`", u.source);
        for v in u.via.iter().rev() {
            command.push_str(&format!(" (in {v})"));
        }
        j.out.push(Finding {
            rule: u.kind.rule(),
            command,
            reason: format!("{}, so it cannot be judged before it runs", u.reason),
        });
    }
    for c in &analysis.commands {
        j.command(c);
    }
    let mut seen = std::collections::BTreeSet::new();
    j.out.retain(|f| seen.insert((f.rule, f.command.clone(), f.reason.clone())));
    j.out
}

/// Whether `id` names a rule.
pub fn is_rule(id: &str) -> bool {
    RULES.iter().any(|(r, _)| *r == id)
}
