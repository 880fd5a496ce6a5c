//! The LISTEN connection: turns `NOTIFY steward_runnable` into wake-ups of this process's waiters.
//!
//! One dedicated connection per store runs `LISTEN steward_runnable` and bumps a counter in a
//! `watch` channel for every notification; waiters hold a receiver and wake when it moved (see
//! [`crate::WorkSignal`]). Notifications sent while the connection is down are lost, so after
//! it reconnects the counter is bumped once: every waiter polls, and nothing claimable is left
//! waiting for a notification that never comes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::AsyncMessage;

use steward_store::Result;

use crate::conn::{Backoff, RawConnection, Target};
use crate::writer::CHANNEL;

/// Stops the listener task when dropped (with the store).
pub(crate) struct Listener {
    _stop: oneshot::Sender<()>,
}

/// Connects and LISTENs once (so that an unreachable server fails `connect`), then keeps the
/// connection up in a task of its own.
pub(crate) async fn spawn(target: Arc<Target>, wake: Arc<watch::Sender<u64>>) -> Result<Listener> {
    let notified = listen(&target).await?;
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(run(target, wake, notified, stopped));
    Ok(Listener { _stop: stop })
}

/// A listening connection: a notification arrives as `()`, and the channel closes when the
/// connection ends.
struct Listening {
    notifications: mpsc::UnboundedReceiver<()>,
    /// Kept alive: dropping the client would close the connection.
    _client: tokio_postgres::Client,
}

async fn listen(target: &Target) -> Result<Listening> {
    let (client, connection) = target.connect_raw().await?;
    let (tx, notifications) = mpsc::unbounded_channel();
    tokio::spawn(drive(connection, tx));
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(|e| target.error("LISTEN", &e))?;
    Ok(Listening { notifications, _client: client })
}

/// Drives a connection's messages (the client's requests included) and forwards notifications.
async fn drive(mut connection: RawConnection, tx: mpsc::UnboundedSender<()>) {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                if tx.send(()).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}

async fn run(
    target: Arc<Target>,
    wake: Arc<watch::Sender<u64>>,
    mut listening: Listening,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut backoff = Backoff::new();
    loop {
        // Forward notifications until the connection ends (or the store is dropped).
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                n = listening.notifications.recv() => match n {
                    Some(()) => wake.send_modify(|n| *n += 1),
                    None => break,
                },
            }
        }
        // Reconnect, with backoff, for as long as the store lives.
        listening = loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = backoff.wait() => {}
            }
            if let Ok(l) = listen(&target).await {
                break l;
            }
        };
        backoff.reset();
        // Whatever was notified while the connection was down is lost: everyone polls once.
        wake.send_modify(|n| *n += 1);
    }
}
