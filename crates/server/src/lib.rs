//! Steward's HTTP server: the JSON API under `/api/v1`, `/healthz` and `/readyz`, behind the
//! access rule of [`access`].
//!
//! The server holds an [`Engine`] and answers from its store. A decision made through the API
//! (create, cancel, resume, gate) is one store write, exactly as from the CLI; whichever worker
//! claims the run drives it (`steward serve` runs embedded ones). What it shows has the same
//! JSON shapes as the CLI's `--json` ([`views`]) and passes the redactor.

pub mod access;
mod api;
pub mod bundle;
mod console;
pub mod error;
mod metrics;
mod stream;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use steward_runtime::Engine;
use steward_store::Store;

pub use access::{Access, AccessError};
pub use error::ApiError;

/// How a server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The token every request must carry (`Authorization: Bearer`); required off loopback.
    pub token: Option<String>,
    /// The directory runs created through the API run in; workflow files are read only from it.
    pub workspace: PathBuf,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Live event streams open at once; one more answers 503.
    pub max_streams: usize,
}

impl ServerConfig {
    /// A server on `listen` for `workspace`, with a 1 MiB body limit, 64 streams and no token.
    pub fn new(listen: SocketAddr, workspace: PathBuf) -> ServerConfig {
        ServerConfig { listen, token: None, workspace, max_body_bytes: 1 << 20, max_streams: 64 }
    }
}

/// Why a server did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The access rule refuses this setup.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The address could not be bound, or the server failed.
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether the server is ready (the recovery scan has run); `/readyz` answers 503 until it is.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the server ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A bound server, not yet answering.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    access: Access,
    config: ServerConfig,
}

impl Server {
    /// Checks the access rule first (a non-loopback address without a token never gets as far
    /// as a socket), then binds.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServeError> {
        let access = Access::for_listen(config.listen, config.token.as_deref())?;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| ServeError::Io { addr: config.listen, source })?;
        Ok(Server { listener, access, config })
    }

    /// The address it listens on (the port the system chose, for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(|source| ServeError::Io { addr: self.config.listen, source })
    }

    /// Answers until `shutdown` fires, then lets requests in flight finish.
    pub async fn run<S: Store + Clone + Send + Sync + 'static>(
        self,
        engine: Engine<S>,
        ready: Readiness,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let state = Arc::new(api::ApiState {
            engine,
            ready: ready.0,
            workspace: self.config.workspace.clone(),
            streams: Arc::new(tokio::sync::Semaphore::new(self.config.max_streams)),
            shutdown: shutdown.clone(),
            metrics: metrics::Metrics::default(),
        });
        tokio::spawn(metrics::follow(state.engine.clone(), state.metrics.clone(), shutdown.clone()));
        let guarded = api::router(state.clone())
            .merge(console::router(state.clone()))
            .layer(axum::middleware::from_fn_with_state(self.access.clone(), access::check))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes));
        let app: Router = api::probes(state)
            .merge(console::sign_in(self.access.clone()))
            .merge(guarded)
            .fallback(api::no_route)
            .layer(axum::middleware::from_fn_with_state(self.access.clone(), access::fence));
        let addr = self.config.listen;
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|source| ServeError::Io { addr, source })
    }
}
