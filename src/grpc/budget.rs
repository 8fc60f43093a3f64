//! A memory budget for request bodies: what the server buffers for request messages not yet
//! whole, bounded per connection and in total.
//!
//! Without it, each stream may hold a partial message just under the size limit, and a peer
//! that opens many streams on many connections and never finishes them makes the server hold
//! streams x connections x 4 MiB. With it:
//!
//! - Bytes of a partial message are charged to the stream's connection and to the server while
//!   they sit in the decoder; bytes that completed a message are never held back.
//! - Flow-control window for partial-message bytes is given back to the peer only while both
//!   budgets have room. Past either budget the window stays closed, so the peer can send at
//!   most what the windows it already has allow (the connection window, 2 MiB by default), and
//!   then must wait.
//! - A stream whose partial message makes no progress for the stall timeout while a budget it
//!   is charged to is full is reset with `RESOURCE_EXHAUSTED`, which frees its share.
//!
//! So the server's request buffers stay under the total budget plus, per open connection, the
//! connection window; well-behaved calls, including 4 MiB requests, see no difference while
//! there is room.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use h2::FlowControl;
use tokio::{
    sync::{futures::OwnedNotified, Notify},
    time::{Instant, Sleep},
};

use crate::grpc::metrics::Metrics;

/// The budget's settings (see [`ServerConfig::request_budget`](crate::grpc::ServerConfig)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestBudget {
    /// Bytes of partial request messages one connection may have buffered before its window
    /// stays closed: 64 MiB, sixteen maximum-size (4 MiB) requests arriving at once on one
    /// connection, and a quarter of the total, so no single connection can take it all. At
    /// least the largest request message.
    ///
    /// More concurrent partial messages than this holds on one connection wait for each other
    /// (HTTP/2's connection window is shared), and those that wait past the stall timeout are
    /// reset: size it for the concurrency of the largest uploads a client makes.
    pub per_connection: usize,
    /// Bytes of partial request messages all connections together may have buffered: 256 MiB,
    /// sixty-four maximum-size requests at once, a fraction of a small server's memory.
    pub total: usize,
    /// How long a stream holding a partial message may go without receiving a byte while a
    /// budget is full before it is reset with `RESOURCE_EXHAUSTED`: 10 s, far longer than any
    /// healthy sender pauses mid-message, short enough to free memory quickly under attack.
    pub stall_timeout: Duration,
}

impl Default for RequestBudget {
    fn default() -> Self {
        Self {
            per_connection: 64 * 1024 * 1024,
            total: 256 * 1024 * 1024,
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// The server-wide budget.
#[derive(Debug)]
pub(crate) struct ServerBudget {
    settings: RequestBudget,
    used: AtomicUsize,
    /// Woken when some budget goes from full to having room.
    room: Arc<Notify>,
    metrics: Option<Metrics>,
}

impl ServerBudget {
    pub(crate) fn new(settings: RequestBudget, metrics: Option<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            used: AtomicUsize::new(0),
            room: Arc::new(Notify::new()),
            metrics,
        })
    }

    /// The budget of one new connection.
    pub(crate) fn connection(self: &Arc<Self>) -> Arc<ConnBudget> {
        Arc::new(ConnBudget {
            server: self.clone(),
            used: AtomicUsize::new(0),
        })
    }
}

/// One connection's budget.
#[derive(Debug)]
pub(crate) struct ConnBudget {
    server: Arc<ServerBudget>,
    used: AtomicUsize,
}

impl ConnBudget {
    fn has_room(&self) -> bool {
        let settings = &self.server.settings;
        self.used.load(Ordering::Relaxed) < settings.per_connection
            && self.server.used.load(Ordering::Relaxed) < settings.total
    }

    fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        self.server.used.fetch_add(bytes, Ordering::Relaxed);
        if let Some(metrics) = &self.server.metrics {
            metrics.buffered(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    fn uncharge(&self, bytes: usize) {
        let settings = &self.server.settings;
        let conn = self.used.fetch_sub(bytes, Ordering::Relaxed);
        let total = self.server.used.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(metrics) = &self.server.metrics {
            metrics.buffered(-i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        // Wake the streams waiting for room only when a budget stops being full: this runs
        // for every message, and most of the time nobody waits.
        let freed = |before: usize, limit: usize| before >= limit && before - bytes < limit;
        if freed(conn, settings.per_connection) || freed(total, settings.total) {
            self.server.room.notify_waiters();
        }
    }
}

/// What one request stream holds against its connection's budget.
pub(crate) struct StreamCharge {
    conn: Arc<ConnBudget>,
    flow: FlowControl,
    /// Bytes of the partial message in the decoder, charged to the budgets.
    charged: usize,
    /// Bytes received whose window has not been given back yet.
    owed: usize,
    /// Fires when the partial message has made no progress for the stall timeout.
    stall: Option<Pin<Box<Sleep>>>,
    /// Registered while window is owed and the budget is full.
    room: Option<Pin<Box<OwnedNotified>>>,
}

impl StreamCharge {
    pub(crate) fn new(conn: Arc<ConnBudget>, flow: FlowControl) -> Self {
        Self {
            conn,
            flow,
            charged: 0,
            owed: 0,
            stall: None,
            room: None,
        }
    }

    /// `bytes` arrived from the peer (and went into the decoder): progress.
    pub(crate) fn received(&mut self, bytes: usize) {
        self.owed += bytes;
        self.progress();
    }

    /// The decoder now holds `buffered` bytes of a partial message: charge exactly that, give
    /// back the window of bytes that completed messages, and the rest when there is room.
    pub(crate) fn settle(&mut self, buffered: usize) {
        if buffered > self.charged {
            self.conn.charge(buffered - self.charged);
        } else if buffered < self.charged {
            self.conn.uncharge(self.charged - buffered);
            self.progress();
        }
        self.charged = buffered;
        let done = self.owed.saturating_sub(buffered);
        self.release(done);
        if self.owed > 0 && self.conn.has_room() {
            self.release(self.owed);
        }
    }

    /// Polled while the stream waits for data. Gives the owed window back once there is room
    /// (and wakes the task for it), and is `Ready` when the stream must be reset: its partial
    /// message made no progress for the stall timeout while a budget was full.
    pub(crate) fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.owed > 0 {
            if self.conn.has_room() {
                self.room = None;
                self.release(self.owed);
                break;
            }
            let notified = self
                .room
                .get_or_insert_with(|| Box::pin(self.conn.server.room.clone().notified_owned()));
            // Registered before the check above is repeated, so a wake-up between the two is
            // not lost.
            notified.as_mut().enable();
            if self.conn.has_room() {
                continue;
            }
            match notified.as_mut().poll(cx) {
                Poll::Ready(()) => self.room = None,
                Poll::Pending => break,
            }
        }
        if self.charged == 0 {
            return Poll::Pending;
        }
        let stall_timeout = self.conn.server.settings.stall_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall_timeout)));
        while stall.as_mut().poll(cx).is_ready() {
            if !self.conn.has_room() {
                // A peer's doing (or an overloaded server): debug, so it cannot fill the logs.
                tracing::debug!(
                    held = self.charged,
                    "resetting a request stream stalled while the request budget is full"
                );
                if let Some(metrics) = &self.conn.server.metrics {
                    metrics.budget_rejected();
                }
                return Poll::Ready(());
            }
            // Idle but harmless while there is room: look again later.
            stall.as_mut().reset(Instant::now() + stall_timeout);
        }
        Poll::Pending
    }

    fn progress(&mut self) {
        if let Some(stall) = self.stall.as_mut() {
            stall
                .as_mut()
                .reset(Instant::now() + self.conn.server.settings.stall_timeout);
        }
    }

    fn release(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.owed -= bytes;
        // An error means the stream is gone; h2 then releases its window itself.
        let _ = self.flow.release_capacity(bytes);
    }
}

impl Drop for StreamCharge {
    fn drop(&mut self) {
        if self.charged > 0 {
            self.conn.uncharge(self.charged);
        }
        self.release(self.owed);
    }
}

impl std::fmt::Debug for StreamCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCharge")
            .field("charged", &self.charged)
            .field("owed", &self.owed)
            .finish_non_exhaustive()
    }
}
