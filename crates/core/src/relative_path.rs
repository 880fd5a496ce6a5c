//! Whether a path names a file inside a directory: the one rule for every path a workflow, a
//! work packet or a model names (relative, no `..`, `.`, empty component, backslash or control
//! character; a leading `./` is allowed).

/// `path` without its leading `./`s.
pub fn strip_dot_slash(path: &str) -> &str {
    let mut path = path;
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    path
}

/// Why `path` could not name a file inside the directory it is relative to, if it could not.
pub fn problem(path: &str) -> Option<&'static str> {
    let path = strip_dot_slash(path);
    if path.is_empty() {
        return Some("the path is empty");
    }
    if path.contains('\\') {
        return Some("the path contains a backslash");
    }
    if path.chars().any(char::is_control) {
        return Some("the path contains a control character");
    }
    let bytes = path.as_bytes();
    if path.starts_with('/') || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':') {
        return Some("the path is absolute");
    }
    for component in path.split('/') {
        match component {
            "" => return Some("the path has an empty component"),
            ".." => return Some("the path contains a `..` component"),
            "." => return Some("the path contains a `.` component"),
            _ => {}
        }
    }
    None
}
