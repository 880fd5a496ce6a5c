//! Live event streams (`text/event-stream`): one run's events, or every run's state changes.
//! Each event's SSE `id` is its place in the log (a run's `seq`, or the store-wide `id`), so a
//! client that reconnects with `Last-Event-ID` gets what follows, without a gap or a repeat:
//! the stream only ever reads the log after the last id it sent, and the store hands out ids
//! in commit order.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;

use steward_core::event::Event;
use steward_store::Store;

use crate::api::ApiState;
use crate::views;

/// How often a stream looks for new events when nothing told it of one.
const POLL: Duration = Duration::from_millis(250);

/// Which log a stream follows.
#[derive(Clone)]
pub(crate) enum Follow {
    /// One run's events, by `seq`; the stream ends once the run has finished and its last
    /// event was sent.
    Run(String),
    /// Every run's events of these types (all, if empty), by store-wide `id`.
    All(Vec<String>),
}

struct Cursor<S> {
    st: Arc<ApiState<S>>,
    follow: Follow,
    after: i64,
    queue: VecDeque<Event>,
    /// The run was seen finished: one more read, then the end.
    closing: bool,
    /// Nothing more to send (a read failed).
    ended: bool,
    updates: tokio::sync::broadcast::Receiver<steward_runtime::ProgressUpdate>,
    /// Held while the stream lives: streams are bounded.
    _permit: OwnedSemaphorePermit,
}

/// A stream of the log `follow` names after `after`.
pub(crate) fn sse<S: Store + Clone + Send + Sync + 'static>(
    st: Arc<ApiState<S>>,
    follow: Follow,
    after: i64,
    permit: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let updates = st.engine.subscribe();
    let cursor =
        Cursor { st, follow, after, queue: VecDeque::new(), closing: false, ended: false, updates, _permit: permit };
    Sse::new(futures_util::stream::unfold(cursor, next)).keep_alive(KeepAlive::default())
}

async fn next<S: Store + Clone + Send + Sync + 'static>(
    mut c: Cursor<S>,
) -> Option<(Result<SseEvent, Infallible>, Cursor<S>)> {
    loop {
        if c.ended || c.st.shutdown.is_cancelled() {
            return None;
        }
        if let Some(e) = c.queue.pop_front() {
            let id = match c.follow {
                Follow::Run(_) => e.seq,
                Follow::All(_) => e.id,
            };
            c.after = id;
            let data = views::event_json(&e, c.st.engine.bus().redactor()).to_string();
            let event = SseEvent::default().id(id.to_string()).event(e.event_type.as_str()).data(data);
            return Some((Ok(event), c));
        }
        let store = c.st.engine.store();
        let read = match &c.follow {
            Follow::Run(run_id) => store.list_events(run_id, c.after).await,
            Follow::All(types) => store.list_events_since(c.after, 500).await.map(|page| {
                // Skipped events still move the cursor, so a quiet filter does not re-read them.
                if let Some(last) = page.last() {
                    c.after = last.id;
                }
                page.into_iter().filter(|e| types.is_empty() || types.contains(&e.event_type)).collect()
            }),
        };
        match read {
            Ok(events) if !events.is_empty() => {
                c.queue.extend(events);
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                // Said once, then the stream ends; the client reconnects from its last id.
                let body = serde_json::json!({"error": {"code": "unavailable", "message": e.to_string()}});
                c.ended = true;
                return Some((Ok(SseEvent::default().event("error").data(body.to_string())), c));
            }
        }
        if c.closing {
            return None;
        }
        if let Follow::Run(run_id) = &c.follow
            && store.get_run(run_id).await.is_ok_and(|r| r.state.is_terminal())
        {
            // Its last events may have landed with the state read just now: one more read.
            c.closing = true;
            continue;
        }
        tokio::select! {
            r = c.updates.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    // No engine to hear from: the poll alone.
                    tokio::time::sleep(POLL).await;
                }
            }
            () = tokio::time::sleep(POLL) => {}
            () = c.st.shutdown.cancelled() => return None,
        }
    }
}
