//! Where an operand points: inside the workspace, a temporary directory, the home directory, a device, a credential store.
//!
//! Lexical only: `..` is resolved on the text, symlinks are not followed
//! (the operating-system sandbox is what stops a symlink that leads out).

use super::ShellWord;
use super::rules::Context;

/// What a path operand refers to, for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Inside the workspace.
    Workspace,
    /// Below `/tmp`, `/var/tmp` or `/dev/shm`.
    Temp,
    /// `/tmp` or `/var/tmp` itself, or everything in it (`/tmp/*`): shared with every other process.
    TempRoot,
    /// `/` or everything in it (`/*`).
    Root,
    /// A home directory itself or everything in it (`~`, `~/*`, `$HOME`).
    Home,
    /// Anywhere else outside the workspace (absolute, in the home directory, `..` escapes).
    Outside,
    /// `$X/` or `$X/*`: `/` if the variable is empty.
    MaybeRoot,
    /// A disk or memory device.
    Device,
    /// `/dev/null`, `/dev/stdout` and other harmless devices.
    SafeDevice,
    /// `/dev/tcp/...`, `/dev/udp/...`: bash's network redirections.
    Network,
    /// Steward's data directory.
    DataDir,
    /// A credential store (`~/.ssh`, `~/.aws`, `/etc/shadow`, ...).
    Credential,
    /// Not known before running.
    Unknown,
}

/// A located operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where it points.
    pub place: Place,
    /// The path, normalised, for reasons.
    pub path: String,
}

/// Credential stores, relative to a home directory (issue 11).
pub const HOME_CREDENTIALS: &[&[&str]] = &[
    &[".ssh"],
    &[".aws"],
    &[".netrc"],
    &[".git-credentials"],
    &[".config", "gcloud"],
    &[".config", "gh"],
    &[".config", "hub"],
    &[".docker", "config.json"],
    &[".kube", "config"],
    &[".npmrc"],
    &[".pypirc"],
    &[".gnupg"],
    &[".azure"],
    &[".cargo", "credentials"],
    &[".cargo", "credentials.toml"],
    &[".gem", "credentials"],
    &[".vault-token"],
    &[".pgpass"],
    &[".password-store"],
    &[".terraform.d", "credentials.tfrc.json"],
    &[".local", "share", "keyrings"],
];

/// Credential stores at absolute paths.
const SYSTEM_CREDENTIALS: &[&[&str]] =
    &[&["etc", "shadow"], &["etc", "shadow-"], &["etc", "gshadow"], &["etc", "sudoers"], &["etc", "sudoers.d"]];

const SAFE_DEVICES: &[&str] =
    &["null", "zero", "full", "random", "urandom", "stdin", "stdout", "stderr", "tty", "ptmx", "fd", "pts", "shm"];

const DISK_DEVICES: &[&str] =
    &["sd", "hd", "vd", "xvd", "nvme", "mmcblk", "md", "dm-", "loop", "sr", "nbd", "zram", "mem", "kmem", "port"];

/// `base` then `path`, as a path expression: absolute and `~` paths replace the base.
pub fn join(base: &str, path: &str) -> String {
    if path.starts_with('/') || path.starts_with('~') || base.is_empty() {
        path.to_owned()
    } else if path.is_empty() {
        base.to_owned()
    } else {
        format!("{}/{path}", base.trim_end_matches('/'))
    }
}

/// How a working directory leaves the workspace, read from its text alone (HSK-TERM-003).
///
/// Lexical: an absolute path, or `..` that climbs above the start. Symlinks are
/// checked where the directory is resolved on disk, before a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CwdEscape {
    /// `/tmp`.
    Absolute,
    /// `..`, `src/../..`.
    Climbs,
}

impl CwdEscape {
    /// Whether `cwd` leaves the workspace, and how.
    pub fn of(cwd: &str) -> Option<CwdEscape> {
        if cwd.starts_with('/') {
            return Some(CwdEscape::Absolute);
        }
        (normalise(comps(cwd)).1 > 0).then_some(CwdEscape::Climbs)
    }

    /// The reason, naming the directory as `shown`.
    pub fn reason(self, shown: &str) -> String {
        match self {
            CwdEscape::Absolute => format!("cwd `{shown}` is absolute; it must be relative to the workspace"),
            CwdEscape::Climbs => format!("cwd `{shown}` is outside the workspace: `..` climbs above its root"),
        }
    }
}

/// Components with `.` and `..` resolved; `Err(n)` when `..` climbs `n` above the start.
fn normalise<'a>(parts: impl IntoIterator<Item = &'a str>) -> (Vec<String>, usize) {
    let mut out: Vec<String> = Vec::new();
    let mut above = 0;
    for p in parts {
        match p {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    above += 1;
                }
            }
            other => out.push(other.to_owned()),
        }
    }
    (out, above)
}

fn comps(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
}

/// Shell pattern matching of one path component: `*`, `?`, `[...]`; a
/// leading `.` must be matched literally, as the shell does.
fn component_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|k| go(rest, &n[k..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some(('[', rest)) => match (rest.iter().position(|c| *c == ']'), n.split_first()) {
                (Some(end), Some((c, n_rest))) => {
                    let set = &rest[..end];
                    let (negate, set) = match set.split_first() {
                        Some(('!' | '^', s)) => (true, s),
                        _ => (false, set),
                    };
                    let mut hit = false;
                    let mut k = 0;
                    while k < set.len() {
                        if k + 2 < set.len() && set[k + 1] == '-' {
                            hit |= set[k] <= *c && *c <= set[k + 2];
                            k += 3;
                        } else {
                            hit |= set[k] == *c;
                            k += 1;
                        }
                    }
                    hit != negate && go(&rest[end + 1..], n_rest)
                }
                _ => false,
            },
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// Whether `target` (components below some directory) is, or may be matched by, `rest` plus `pattern`.
fn reaches(rest: &[String], pattern: &[&str], target: &[&str]) -> bool {
    if rest.len() >= target.len() {
        return rest.iter().zip(target).all(|(a, b)| a == b);
    }
    if !rest.iter().zip(target).all(|(a, b)| a == b) {
        return false;
    }
    // A pattern must reach `target` itself: a directory that only contains it is not it.
    if pattern.len() < target.len() - rest.len() {
        return false;
    }
    target[rest.len()..].iter().zip(pattern).all(|(t, p)| component_matches(p, t))
}

/// A path's form after joining with the directories it is relative to.
enum Form {
    Absolute(Vec<String>),
    Home { user: String, rest: Vec<String>, above: bool },
    Relative { rest: Vec<String>, above: bool },
}

fn form(path: &str, ctx: &Context<'_>) -> Form {
    if let Some(rest) = path.strip_prefix('~') {
        let (user, below) = rest.split_once('/').unwrap_or((rest, ""));
        if user.is_empty()
            && let Some(home) = ctx.home
        {
            return Form::Absolute(normalise(comps(home).chain(comps(below))).0);
        }
        let (rest, above) = normalise(comps(below));
        return Form::Home { user: user.to_owned(), rest, above: above > 0 };
    }
    if path.starts_with('/') {
        return Form::Absolute(normalise(comps(path)).0);
    }
    let joined = join(ctx.cwd.trim_start_matches("./"), path);
    match ctx.workspace {
        Some(ws) => Form::Absolute(normalise(comps(ws).chain(comps(&joined))).0),
        None => {
            let (rest, above) = normalise(comps(&joined));
            Form::Relative { rest, above: above > 0 }
        }
    }
}

fn show(form: &Form) -> String {
    match form {
        Form::Absolute(c) => format!("/{}", c.join("/")),
        Form::Home { user, rest, .. } => {
            if rest.is_empty() {
                format!("~{user}")
            } else {
                format!("~{user}/{}", rest.join("/"))
            }
        }
        Form::Relative { rest, above } => {
            let r = rest.join("/");
            match (above, r.is_empty()) {
                (true, _) => format!("../{r}"),
                (false, true) => ".".to_owned(),
                (false, false) => r,
            }
        }
    }
}

/// The components of the home directory an absolute path is in, and the rest.
fn in_home<'a>(c: &'a [String], ctx: &Context<'_>) -> Option<(usize, &'a [String])> {
    if let Some(home) = ctx.home {
        let h = normalise(comps(home)).0;
        if !h.is_empty() && c.starts_with(&h) {
            return Some((h.len(), &c[h.len()..]));
        }
    }
    match c.first().map(String::as_str) {
        Some("root") => Some((1, &c[1..])),
        Some("home") if c.len() >= 2 => Some((2, &c[2..])),
        _ => None,
    }
}

fn data_dir(ctx: &Context<'_>) -> Option<Form> {
    let d = ctx.data_dir?;
    Some(if d.starts_with('/') || d.starts_with('~') {
        form(d, ctx)
    } else {
        // Relative to the workspace root, not to the command's directory.
        form(d, &Context { cwd: "", ..*ctx })
    })
}

/// Where a word points, run in `cwd` (a path expression relative to where the text starts).
pub fn locate(word: &ShellWord, cwd: Option<&str>, ctx: &Context<'_>) -> Located {
    let text = word.text.as_str();
    let cut = word.glob.map_or(word.known, |g| g.min(word.known)).min(text.len());
    let partial = cut < text.len();
    let known = text.get(..cut).unwrap_or("");
    let unknown = |path: &str| Located { place: Place::Unknown, path: path.to_owned() };
    if known.is_empty() && partial {
        let rest = text.find('/').map_or("", |k| &text[k..]);
        if word.leading_param && matches!(rest, "/" | "/*" | "/.*" | "/." | "/**") {
            return Located { place: Place::MaybeRoot, path: text.to_owned() };
        }
    }
    // A glob or an unknown expansion: judge the directory it is in, and what the pattern may match.
    let (dir, pattern): (&str, Vec<&str>) = if partial {
        match known.rfind('/') {
            Some(k) => (&text[..=k], text[k + 1..].split('/').collect()),
            None => ("", text.split('/').collect()),
        }
    } else {
        (text, Vec::new())
    };
    // Unknown expansions in the pattern may be anything.
    let pattern: Vec<String> = pattern
        .iter()
        .map(|p| if p.contains('$') || p.contains('`') { "*".to_owned() } else { (*p).to_owned() })
        .collect();
    let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
    let absolute = dir.starts_with('/') || (word.home && dir.starts_with('~'));
    let path = if absolute {
        dir.to_owned()
    } else if dir.starts_with('~') {
        // A quoted `~` is a file named `~`.
        format!("./{dir}")
    } else {
        match cwd {
            Some(c) => join(c, dir),
            None => return unknown(text),
        }
    };
    if known.is_empty() && partial && !absolute && dir.is_empty() && pattern.iter().all(|p| *p == "*") {
        // `$X` alone: nothing is known.
        if word.params.is_empty() && word.glob.is_none() {
            return unknown(text);
        }
    }
    let f = form(&path, ctx);
    // A relative path that climbs out of the workspace is outside, even if it lands in `/tmp`.
    let escapes = !path.starts_with('/')
        && !path.starts_with('~')
        && normalise(comps(&join(ctx.cwd.trim_start_matches("./"), &path))).1 > 0;
    let shown = if partial { format!("{}/{}", show(&f).trim_end_matches('/'), pattern.join("/")) } else { show(&f) };
    let at = |place: Place| Located { place, path: shown.clone() };
    let steward = |c: &[String]| {
        c.iter().any(|x| x == ".steward")
            || pattern.first().is_some_and(|p| *p != "*" && component_matches(p, ".steward"))
    };
    let credential = |rest: &[String]| HOME_CREDENTIALS.iter().any(|cred| reaches(rest, &pattern, cred));
    if let Some(d) = data_dir(ctx) {
        let inside = match (&f, &d) {
            (Form::Absolute(a), Form::Absolute(b)) => {
                reaches(a, &pattern, &b.iter().map(String::as_str).collect::<Vec<_>>())
            }
            (Form::Relative { rest: a, above: false }, Form::Relative { rest: b, above: false }) => {
                reaches(a, &pattern, &b.iter().map(String::as_str).collect::<Vec<_>>())
            }
            _ => false,
        };
        if inside {
            return at(Place::DataDir);
        }
    }
    match &f {
        Form::Absolute(c) => {
            let first = c.first().map(String::as_str);
            if first == Some("dev") {
                let dev = c.get(1).map(String::as_str).unwrap_or("");
                if matches!(dev, "tcp" | "udp") {
                    return at(Place::Network);
                }
                if SAFE_DEVICES.contains(&dev) && !(dev == "shm" && c.len() == 2) {
                    return at(if dev == "shm" { Place::Temp } else { Place::SafeDevice });
                }
                if DISK_DEVICES.iter().any(|d| dev.starts_with(d)) || matches!(dev, "disk" | "mapper") {
                    return at(Place::Device);
                }
                if partial && c.len() == 1 {
                    return at(Place::Device);
                }
                return at(Place::Outside);
            }
            if first == Some("proc") && c.get(2).is_some_and(|x| matches!(x.as_str(), "environ" | "mem")) {
                return at(Place::Credential);
            }
            if SYSTEM_CREDENTIALS.iter().any(|cred| reaches(c, &pattern, cred)) {
                return at(Place::Credential);
            }
            if let Some((_, rest)) = in_home(c, ctx)
                && credential(rest)
            {
                return at(Place::Credential);
            }
            if steward(c) {
                return at(Place::DataDir);
            }
            if c.is_empty() {
                return at(Place::Root);
            }
            if in_home(c, ctx).is_some_and(|(_, rest)| rest.is_empty()) {
                return at(Place::Home);
            }
            if escapes {
                return at(Place::Outside);
            }
            if let Some(ws) = ctx.workspace {
                let w = normalise(comps(ws)).0;
                if c.starts_with(&w) {
                    return at(Place::Workspace);
                }
            }
            let temp_len = match (first, c.get(1).map(String::as_str)) {
                (Some("tmp"), _) => 1,
                (Some("var"), Some("tmp")) => 2,
                _ => 0,
            };
            if temp_len > 0 {
                return at(if c.len() > temp_len { Place::Temp } else { Place::TempRoot });
            }
            at(Place::Outside)
        }
        Form::Home { rest, above, .. } => {
            if *above {
                return at(Place::Outside);
            }
            if credential(rest) {
                return at(Place::Credential);
            }
            if steward(rest) {
                return at(Place::DataDir);
            }
            if rest.is_empty() {
                return at(Place::Home);
            }
            at(Place::Outside)
        }
        Form::Relative { rest, above } => {
            if steward(rest) {
                return at(Place::DataDir);
            }
            if *above {
                return at(Place::Outside);
            }
            at(Place::Workspace)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_components_match_like_the_shell() {
        assert!(component_matches(".ss*", ".ssh"));
        assert!(component_matches(".*", ".ssh"));
        assert!(!component_matches("*", ".ssh"));
        assert!(component_matches("id_?sa", "id_rsa"));
        assert!(component_matches("s[a-z]d", "sed"));
        assert!(!component_matches("s[!a-z]d", "sed"));
    }
}
