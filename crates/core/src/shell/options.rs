//! Command-line options as getopt reads them: short flags combined or split, long options by unique prefix.

use std::collections::BTreeSet;

use super::ShellWord;

/// What a program's options look like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// Short flags and the long name each stands for.
    pub(crate) short: &'static [(char, &'static str)],
    /// Long options, so that a unique prefix (`--recur`) resolves.
    pub(crate) long: &'static [&'static str],
    /// Short options that take an argument.
    pub(crate) short_arg: &'static str,
    /// Long options that take an argument when not given as `--name=value`.
    pub(crate) long_arg: &'static [&'static str],
}

/// A command line read against the options a program takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Options given, by long name where one is known (`-rf` → `recursive`, `force`).
    pub flags: BTreeSet<String>,
    /// Options with their argument.
    pub values: Vec<(String, ShellWord)>,
    /// Everything that is not an option, in order.
    pub operands: Vec<ShellWord>,
}

impl Parsed {
    /// Whether an option was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.contains(name)
    }

    /// The argument of an option.
    pub fn value(&self, name: &str) -> Option<&ShellWord> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Resolves a long option as GNU getopt does: an exact name, else a unique prefix.
fn long_name(spec: &Spec, given: &str) -> String {
    if spec.long.contains(&given) {
        return given.to_owned();
    }
    let mut matches = spec.long.iter().filter(|l| l.starts_with(given));
    match (matches.next(), matches.next()) {
        (Some(one), None) => (*one).to_owned(),
        _ => given.to_owned(),
    }
}

fn short_name(spec: &Spec, c: char) -> String {
    spec.short.iter().find(|(s, _)| *s == c).map_or_else(|| c.to_string(), |(_, l)| (*l).to_owned())
}

/// Reads `args` as GNU tools do: options may follow operands, `--` ends them.
pub(crate) fn parse(args: &[ShellWord], spec: &Spec) -> Parsed {
    let mut out = Parsed::default();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        i += 1;
        let t = a.text.as_str();
        if t == "--" && a.literal {
            out.operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = t.strip_prefix("--") {
            let (given, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(ShellWord { text: v.to_owned(), home: v.starts_with('~'), ..a.clone() })),
                None => (long, None),
            };
            let name = long_name(spec, given);
            let value = value.or_else(|| {
                spec.long_arg.contains(&name.as_str()).then(|| {
                    i += 1;
                    args.get(i - 1).cloned().unwrap_or_default()
                })
            });
            if let Some(v) = value {
                out.values.push((name.clone(), v));
            }
            out.flags.insert(name);
            continue;
        }
        if t.len() > 1 && t.starts_with('-') {
            if !a.literal {
                // `-$FLAGS`: options, but which ones is not known.
                continue;
            }
            for (k, c) in t.char_indices().skip(1) {
                let name = short_name(spec, c);
                if spec.short_arg.contains(c) {
                    let rest = &t[k + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        i += 1;
                        args.get(i - 1).cloned().unwrap_or_default()
                    } else {
                        ShellWord { text: rest.to_owned(), ..a.clone() }
                    };
                    out.values.push((name.clone(), value));
                    out.flags.insert(name);
                    break;
                }
                out.flags.insert(name);
            }
            continue;
        }
        out.operands.push(a.clone());
    }
    out
}

/// `find`'s starting points (`.` when none) and its expression.
pub(crate) fn find_parts(args: &[ShellWord]) -> (Vec<ShellWord>, &[ShellWord]) {
    let mut i = 0;
    // Options before the starting points: -H -L -P, -D debugopts, -Olevel.
    while let Some(a) = args.get(i) {
        match a.text.as_str() {
            "-H" | "-L" | "-P" => i += 1,
            "-D" => i += 2,
            t if t.starts_with("-O") => i += 1,
            _ => break,
        }
    }
    let start = i;
    while args
        .get(i)
        .is_some_and(|a| !(matches!(a.text.as_str(), "(" | "!" | ",") || a.text.len() > 1 && a.text.starts_with('-')))
    {
        i += 1;
    }
    let mut roots: Vec<ShellWord> = args.get(start..i).map(<[ShellWord]>::to_vec).unwrap_or_default();
    if roots.is_empty() {
        roots.push(ShellWord::lit("."));
    }
    (roots, args.get(i..).unwrap_or_default())
}

pub(crate) const RM: Spec = Spec {
    short: &[
        ('r', "recursive"),
        ('R', "recursive"),
        ('f', "force"),
        ('i', "interactive"),
        ('I', "interactive"),
        ('d', "dir"),
        ('v', "verbose"),
    ],
    long: &[
        "force",
        "interactive",
        "one-file-system",
        "no-preserve-root",
        "preserve-root",
        "recursive",
        "dir",
        "verbose",
        "help",
        "version",
    ],
    short_arg: "",
    long_arg: &[],
};

pub(crate) const GIT_RESET: Spec = Spec {
    short: &[('q', "quiet"), ('p', "patch"), ('N', "intent-to-add")],
    long: &[
        "hard",
        "soft",
        "mixed",
        "merge",
        "keep",
        "quiet",
        "no-quiet",
        "patch",
        "intent-to-add",
        "refresh",
        "no-refresh",
        "recurse-submodules",
        "no-recurse-submodules",
        "pathspec-from-file",
        "pathspec-file-nul",
    ],
    short_arg: "",
    long_arg: &["pathspec-from-file"],
};

pub(crate) const GIT_CLEAN: Spec = Spec {
    short: &[('f', "force"), ('i', "interactive"), ('n', "dry-run"), ('q', "quiet"), ('e', "exclude")],
    long: &["force", "dry-run", "interactive", "quiet", "exclude"],
    short_arg: "e",
    long_arg: &["exclude"],
};

pub(crate) const GIT_PUSH: Spec = Spec {
    short: &[
        ('f', "force"),
        ('d', "delete"),
        ('n', "dry-run"),
        ('u', "set-upstream"),
        ('q', "quiet"),
        ('v', "verbose"),
        ('o', "push-option"),
        ('4', "ipv4"),
        ('6', "ipv6"),
    ],
    long: &[
        "all",
        "branches",
        "mirror",
        "tags",
        "follow-tags",
        "no-follow-tags",
        "atomic",
        "no-atomic",
        "dry-run",
        "porcelain",
        "delete",
        "prune",
        "no-prune",
        "force",
        "no-force",
        "force-with-lease",
        "no-force-with-lease",
        "force-if-includes",
        "no-force-if-includes",
        "set-upstream",
        "repo",
        "push-option",
        "receive-pack",
        "exec",
        "thin",
        "no-thin",
        "quiet",
        "verbose",
        "progress",
        "no-progress",
        "recurse-submodules",
        "no-recurse-submodules",
        "verify",
        "no-verify",
        "signed",
        "no-signed",
        "ipv4",
        "ipv6",
    ],
    short_arg: "o",
    long_arg: &["repo", "push-option", "receive-pack", "exec"],
};

pub(crate) const GIT_CHECKOUT: Spec = Spec {
    short: &[('f', "force"), ('q', "quiet"), ('m', "merge"), ('p', "patch"), ('t', "track")],
    long: &[
        "force",
        "quiet",
        "progress",
        "no-progress",
        "ours",
        "theirs",
        "track",
        "no-track",
        "guess",
        "no-guess",
        "detach",
        "orphan",
        "merge",
        "conflict",
        "patch",
        "ignore-skip-worktree-bits",
        "ignore-other-worktrees",
        "overwrite-ignore",
        "no-overwrite-ignore",
        "recurse-submodules",
        "no-recurse-submodules",
        "overlay",
        "no-overlay",
        "pathspec-from-file",
        "pathspec-file-nul",
    ],
    short_arg: "bB",
    long_arg: &["orphan", "conflict", "pathspec-from-file"],
};

pub(crate) const GIT_RESTORE: Spec = Spec {
    short: &[('s', "source"), ('p', "patch"), ('W', "worktree"), ('S', "staged"), ('q', "quiet"), ('m', "merge")],
    long: &[
        "source",
        "patch",
        "worktree",
        "staged",
        "quiet",
        "progress",
        "no-progress",
        "ours",
        "theirs",
        "merge",
        "conflict",
        "ignore-unmerged",
        "ignore-skip-worktree-bits",
        "recurse-submodules",
        "no-recurse-submodules",
        "overlay",
        "no-overlay",
        "pathspec-from-file",
        "pathspec-file-nul",
    ],
    short_arg: "s",
    long_arg: &["source", "conflict", "pathspec-from-file"],
};

pub(crate) const GIT_SWITCH: Spec = Spec {
    short: &[
        ('c', "create"),
        ('C', "force-create"),
        ('d', "detach"),
        ('f', "force"),
        ('m', "merge"),
        ('q', "quiet"),
        ('t', "track"),
    ],
    long: &[
        "create",
        "force-create",
        "detach",
        "guess",
        "no-guess",
        "discard-changes",
        "force",
        "merge",
        "conflict",
        "quiet",
        "progress",
        "no-progress",
        "track",
        "no-track",
        "orphan",
        "ignore-other-worktrees",
        "recurse-submodules",
        "no-recurse-submodules",
    ],
    short_arg: "cC",
    long_arg: &["create", "force-create", "conflict", "orphan"],
};

pub(crate) const GIT_GC: Spec = Spec {
    short: &[('q', "quiet")],
    long: &["aggressive", "auto", "prune", "no-prune", "quiet", "force", "keep-largest-pack"],
    short_arg: "",
    long_arg: &[],
};

/// Programs that write to their operands (all of them).
pub(crate) const WRITES_ALL: Spec = Spec {
    short: &[('R', "recursive"), ('r', "recursive"), ('p', "parents")],
    long: &[
        "recursive",
        "reference",
        "parents",
        "mode",
        "size",
        "no-create",
        "date",
        "append",
        "iterations",
        "zero",
        "remove",
    ],
    short_arg: "mdtrsn",
    long_arg: &["mode", "size", "date", "iterations"],
};

/// Programs that copy to a destination (the last operand, or `-t DIR`).
pub(crate) const COPIES: Spec = Spec {
    short: &[('t', "target-directory"), ('r', "recursive"), ('R', "recursive"), ('S', "suffix")],
    long: &[
        "target-directory",
        "recursive",
        "suffix",
        "no-target-directory",
        "force",
        "backup",
        "mode",
        "owner",
        "group",
    ],
    short_arg: "tSmogeBT",
    long_arg: &["target-directory", "suffix", "mode", "owner", "group"],
};

pub(crate) const SED: Spec = Spec {
    short: &[('i', "in-place"), ('e', "expression"), ('f', "file")],
    long: &["in-place", "expression", "file", "quiet", "silent", "regexp-extended", "separate", "null-data"],
    short_arg: "efl",
    long_arg: &["expression", "file"],
};

pub(crate) const DOWNLOAD: Spec = Spec {
    short: &[('o', "output"), ('O', "output-document"), ('P', "directory-prefix")],
    long: &["output", "output-document", "directory-prefix"],
    short_arg: "oOPHdXuAeFwT",
    long_arg: &["output", "output-document", "directory-prefix"],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<ShellWord> {
        s.split(' ').map(ShellWord::lit).collect()
    }

    /// Issue 11: `-rf`, `-r -f`, `-fr`, `--recursive`, `--recur` and `--force` all read the same.
    #[test]
    fn short_flags_combine_and_long_options_resolve_by_prefix() {
        for line in ["-rf /", "-r -f /", "-fr /", "--recursive --force /", "--recur --forc /", "/ -R -f", "-Rf -- /"] {
            let p = parse(&words(line), &RM);
            assert!(p.has("recursive") && p.has("force"), "{line}: {p:?}");
            assert_eq!(p.operands.len(), 1, "{line}");
            assert_eq!(p.operands[0].text, "/", "{line}");
        }
        let p = parse(&words("-- -rf"), &RM);
        assert!(!p.has("recursive"));
        assert_eq!(p.operands[0].text, "-rf");
        let p = parse(&words("--no-preserve-root -r /"), &RM);
        assert!(p.has("no-preserve-root"));
        // `--force-with-lease` is not `--force`, and `--forc` is ambiguous for push.
        let p = parse(&words("--force-with-lease=main origin"), &GIT_PUSH);
        assert!(p.has("force-with-lease") && !p.has("force"));
        assert_eq!(p.operands.len(), 1);
        let p = parse(&words("-o ci.skip -f origin"), &GIT_PUSH);
        assert!(p.has("force"));
        assert_eq!(p.value("push-option").map(|w| w.text.as_str()), Some("ci.skip"));
        assert_eq!(p.operands.len(), 1);
    }

    #[test]
    fn find_reads_its_starting_points() {
        let w = words("-L / ~ -name x -delete");
        let (roots, expr) = find_parts(&w);
        assert_eq!(roots.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["/", "~"]);
        assert_eq!(expr.len(), 3);
        let w = words("-name x");
        assert_eq!(find_parts(&w).0[0].text, ".");
    }
}
