//! A TCP proxy on loopback that can cut every connection through it at once, to break a
//! client's connections at arbitrary moments (mid-query, mid-COMMIT) while the server lives on,
//! or stall them (nothing forwarded, nothing closed), as a partition or a hung server would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards `127.0.0.1:<port>` to a target address until dropped.
pub struct CutProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    cuts: Arc<watch::Sender<u64>>,
    stalls: Arc<watch::Sender<u64>>,
    /// Connections cut so far.
    cut: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for CutProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CutProxy").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl CutProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: String) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let cuts = Arc::new(watch::Sender::new(0u64));
        let stalls = Arc::new(watch::Sender::new(0u64));
        let cut = Arc::new(AtomicU64::new(0));
        let (cuts_tx, stalls_tx, count) = (cuts.clone(), stalls.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(&target).await else { continue };
                // Without it, Nagle's algorithm holds back the small pipelined messages of a
                // database protocol for a delayed ACK (40 ms) at each hop.
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut cut_now, mut stall_now) = (cuts_tx.subscribe(), stalls_tx.subscribe());
                let count = count.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_now.changed() => {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ = stall_now.changed() => {
                            // Both ends stay open and nothing moves, until a cut.
                            let _ = cut_now.changed().await;
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Dropping both ends closes them, whatever was in flight.
                });
            }
        });
        CutProxy { port, cuts, stalls, cut, task }
    }

    /// Cuts every connection open now; new ones are forwarded again.
    pub fn cut_all(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Stops forwarding on every connection open now, closing nothing (until [`CutProxy::cut_all`]);
    /// new ones are forwarded again.
    pub fn stall_all(&self) {
        self.stalls.send_modify(|n| *n += 1);
    }

    /// How many connections were cut so far.
    pub fn cut_count(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }
}
