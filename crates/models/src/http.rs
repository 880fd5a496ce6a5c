//! The request loop HTTP providers share: timeout, cancellation, retries with backoff.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Timeouts and retry policy of an HTTP provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Per request.
    pub timeout: Duration,
    /// Retries after the first request, on 429, 5xx and connection errors.
    pub max_retries: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Upper bound on a delay, `Retry-After` included.
    pub max_backoff: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(120),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A plain HTTP client (no proxy from the environment: model servers are addressed directly).
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| Error::Config(format!("cannot build an HTTP client: {e}")))
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

/// POSTs a JSON body and returns the 2xx response body and how many requests it took.
pub async fn post_json(
    client: &reqwest::Client,
    provider: &str,
    url: &str,
    headers: &[(&str, String)],
    body: &serde_json::Value,
    cfg: &HttpConfig,
    cancel: &CancellationToken,
) -> Result<(String, u32)> {
    let payload = body.to_string();
    let mut requests = 0;
    loop {
        requests += 1;
        let mut req = client
            .post(url)
            .timeout(cfg.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.clone());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let outcome = tokio::select! {
            r = req.send() => r,
            () = cancel.cancelled() => return Err(Error::Cancelled),
        };
        let error = match outcome {
            Ok(resp) if resp.status().is_success() => {
                let text = tokio::select! {
                    t = resp.text() => t,
                    () = cancel.cancelled() => return Err(Error::Cancelled),
                };
                return match text {
                    Ok(t) => Ok((t, requests)),
                    Err(e) if e.is_timeout() => Err(Error::Timeout(provider.to_owned(), cfg.timeout)),
                    Err(e) => Err(Error::Protocol(provider.to_owned(), format!("cannot read the response: {e}"))),
                };
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = retry_after(&resp);
                let body = resp.text().await.unwrap_or_default();
                let body: String = body.chars().take(500).collect();
                Error::Status { provider: provider.to_owned(), status, body, retry_after }
            }
            Err(e) if e.is_timeout() => Error::Timeout(provider.to_owned(), cfg.timeout),
            Err(e) => Error::Connect(provider.to_owned(), url.to_owned(), e.without_url().to_string()),
        };
        if !error.is_retryable() || requests > cfg.max_retries {
            return Err(error);
        }
        let backoff = cfg.initial_backoff.saturating_mul(1 << (requests - 1).min(16));
        let wait = match &error {
            Error::Status { retry_after: Some(d), .. } => *d,
            _ => backoff,
        }
        .min(cfg.max_backoff);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Err(Error::Cancelled),
        }
    }
}
