//! Who may call the API. Bound to a loopback address, anyone on this machine may (as anyone
//! here may run `steward`); bound to any other address the server refuses to start without a
//! token, and every request must carry it as `Authorization: Bearer`.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The access rule a server runs under.
#[derive(Clone)]
pub struct Access {
    /// SHA-256 of the token, if one is required: compared digest to digest, so neither the
    /// token's length nor its bytes show in how long a comparison takes.
    token: Option<[u8; 32]>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token, not even its digest.
        f.debug_struct("Access").field("token", &self.token.map(|_| "required")).finish()
    }
}

/// Why a server may not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A non-loopback address without a token.
    #[error(
        "refusing to listen on {0} without a token: every request would be unauthenticated. Set `[server] token` in steward.toml or STEWARD_API_TOKEN, or listen on a loopback address (127.0.0.1, [::1])"
    )]
    TokenRequired(SocketAddr),
    /// A token too short to be one.
    #[error("the API token is {0} characters long; use at least 16 (for example 32 random hexadecimal digits)")]
    WeakToken(usize),
}

impl Access {
    /// The rule for a server on `listen`: a token is required off loopback, and honoured on
    /// loopback if given.
    pub fn for_listen(listen: SocketAddr, token: Option<&str>) -> Result<Access, AccessError> {
        let token = token.filter(|t| !t.is_empty());
        match token {
            Some(t) if t.chars().count() < 16 => Err(AccessError::WeakToken(t.chars().count())),
            Some(t) => Ok(Access { token: Some(Sha256::digest(t.as_bytes()).into()) }),
            None if listen.ip().is_loopback() => Ok(Access { token: None }),
            None => Err(AccessError::TokenRequired(listen)),
        }
    }

    /// Whether a request's `Authorization` header value lets it in.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(want) = &self.token else { return true };
        let Some(given) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        same(&Sha256::digest(given).into(), want)
    }

    /// Whether a token is required at all.
    pub fn open(&self) -> bool {
        self.token.is_none()
    }

    /// The console's session cookie value for a person who typed `token`: the token's digest
    /// (so the token itself is never stored in a browser), or `None` for a wrong token.
    pub(crate) fn session_for(&self, token: &str) -> Option<String> {
        let want = self.token.as_ref()?;
        let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        same(&got, want).then(|| hex(&got))
    }

    /// Whether a request carries a console session cookie for the token.
    fn admits_session(&self, cookies: Option<&str>) -> bool {
        let (Some(want), Some(cookies)) = (&self.token, cookies) else { return false };
        cookies
            .split(';')
            .filter_map(|c| c.trim().strip_prefix(SESSION_COOKIE).and_then(|v| v.strip_prefix('=')))
            .any(|v| same_bytes(v.as_bytes(), hex(want).as_bytes()))
    }
}

/// The console's session cookie.
pub(crate) const SESSION_COOKIE: &str = "steward_session";

/// Constant time: every byte is looked at whatever differs.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a browser says a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// A page of this server (`Sec-Fetch-Site: same-origin`, or an `Origin` naming this host).
    Same,
    /// Another site's page, or an origin the browser would not name (`Origin: null`).
    Other,
    /// No browser said: a person typing an address, or a program such as curl.
    Unsaid,
}

/// Where `headers` say the request comes from. `Sec-Fetch-Site` is asked first: browsers set it
/// and pages cannot; `Origin` is the fallback for browsers without it.
pub(crate) fn site(headers: &axum::http::HeaderMap) -> Site {
    if let Some(fetch) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return match fetch {
            "same-origin" => Site::Same,
            "none" => Site::Unsaid,
            _ => Site::Other,
        };
    }
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else { return Site::Unsaid };
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok());
    let origin = origin.to_str().ok();
    let named = origin.and_then(|o| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")));
    if named.is_some() && named == host { Site::Same } else { Site::Other }
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.x.y.z`, `[::1]`,
/// with or without a port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => {
            host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(n, _)| n)
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Fences every request passes, whatever it carries:
/// - on a server that asks no token (loopback), the `Host` must name the loopback: a web page
///   whose own domain was made to resolve to 127.0.0.1 (DNS rebinding) would otherwise be
///   same-origin with the API and could read and change everything;
/// - a request that changes something (any method but GET and HEAD) that a browser says comes
///   from another site is refused: a page elsewhere cannot post to the API or the console on
///   the operator's behalf, whatever credentials the browser would attach.
pub(crate) async fn fence(State(access): State<Access>, request: Request, next: Next) -> Result<Response, ApiError> {
    let headers = request.headers();
    if access.open() {
        let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !loopback_host(host) {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "host_refused",
                "this server answers only requests addressed to the loopback (localhost, 127.0.0.1, [::1]); give it a token to serve other names",
            ));
        }
    }
    let changes = !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if changes && site(headers) == Site::Other {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "cross_site",
            "refused: a request from another site's page cannot change anything here",
        ));
    }
    Ok(next.run(request).await)
}

/// The middleware: a request the rule does not admit is answered 401 (JSON), or, for a
/// browser asking for a page, sent to the console's sign-in page.
pub(crate) async fn check(State(access): State<Access>, request: Request, next: Next) -> Result<Response, ApiError> {
    let headers = request.headers();
    let cookies = headers.get(axum::http::header::COOKIE).and_then(|v| v.to_str().ok());
    if access.admits(headers.get(AUTHORIZATION).map(|v| v.as_bytes())) || access.admits_session(cookies) {
        return Ok(next.run(request).await);
    }
    let wants_page =
        headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if wants_page && request.method() == axum::http::Method::GET {
        return Ok(axum::response::Redirect::to("/login").into_response());
    }
    Err(ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this server needs `Authorization: Bearer <token>` (the token set by `[server] token` or STEWARD_API_TOKEN)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Issue 13 point 3: off loopback, no token means no server.
    #[test]
    fn hosts_and_sites_are_read_as_a_browser_means_them() {
        for ok in ["localhost", "localhost:8420", "127.0.0.1:8420", "127.1.2.3", "[::1]:8420", "[::1]", "LOCALHOST"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for refused in [
            "",
            "evil.example",
            "evil.example:8420",
            "localhost.evil.example",
            "10.0.0.1:8420",
            "[::2]:80",
            "127.0.0.1.nip.io",
        ] {
            assert!(!loopback_host(refused), "{refused}");
        }
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap_or_else(|e| panic!("{e}")));
            }
            h
        };
        assert_eq!(site(&headers(&[])), Site::Unsaid);
        assert_eq!(site(&headers(&[("host", "127.0.0.1:8420"), ("origin", "http://127.0.0.1:8420")])), Site::Same);
        assert_eq!(site(&headers(&[("host", "127.0.0.1:8420"), ("origin", "http://evil.example")])), Site::Other);
        assert_eq!(site(&headers(&[("host", "127.0.0.1:8420"), ("origin", "null")])), Site::Other);
        assert_eq!(
            site(&headers(&[("sec-fetch-site", "same-site"), ("origin", "http://127.0.0.1:8420")])),
            Site::Other
        );
        assert_eq!(site(&headers(&[("sec-fetch-site", "none")])), Site::Unsaid);
    }

    #[test]
    fn a_token_is_required_off_loopback_and_checked_when_set() {
        assert!(matches!(Access::for_listen(addr("0.0.0.0:8420"), None), Err(AccessError::TokenRequired(_))));
        assert!(matches!(Access::for_listen(addr("10.1.2.3:8420"), Some("")), Err(AccessError::TokenRequired(_))));
        assert!(matches!(Access::for_listen(addr("0.0.0.0:8420"), Some("short")), Err(AccessError::WeakToken(5))));
        let open = Access::for_listen(addr("127.0.0.1:8420"), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(open.admits(None));
        assert!(Access::for_listen(addr("[::1]:8420"), None).is_ok());
        let token = "0123456789abcdef0123";
        let closed = Access::for_listen(addr("0.0.0.0:8420"), Some(token)).unwrap_or_else(|e| panic!("{e}"));
        assert!(closed.admits(Some(format!("Bearer {token}").as_bytes())));
        for wrong in ["", "Bearer", "Bearer ", "bearer 0123456789abcdef0123", "Bearer 0123456789abcdef012", token] {
            assert!(!closed.admits(Some(wrong.as_bytes())), "{wrong:?} was let in");
        }
        assert!(!closed.admits(None));
        assert!(!format!("{closed:?}").contains(token));
    }
}
