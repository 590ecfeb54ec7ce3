//! Ending a socket's connections. Each connection holds a [`ConnGuard`]; the socket's
//! [`Conns`] counts them, asks them to finish (HTTP connections stop taking requests, byte
//! streams go on) and, at the drain deadline, to stop at once. A connection looks at its
//! signal whenever its task is polled: an atomic load and a waker registration, cheaper on
//! every request than a watch channel.

use std::{
    pin::{Pin, pin},
    sync::{
        Arc, Weak,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
};

use atomic_waker::AtomicWaker;
use tokio::sync::mpsc;

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const KILLED: u8 = 2;

/// One connection's signal: its state, and the task to wake when it changes.
struct Signal {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self, to: u8) {
        self.state.fetch_max(to, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// A socket's connections.
pub struct Conns {
    alive: Option<mpsc::Sender<()>>,
    gone: mpsc::Receiver<()>,
    signals: Vec<Weak<Signal>>,
    /// When `signals` next drops the connections that have ended.
    prune_at: usize,
}

/// Held by a connection for its lifetime, and by what outlives it (an upgraded tunnel).
/// Clones share one waker: they are for a connection and the tunnel that takes over from
/// it, which are not waiting on the signal at the same time for longer than the handover.
#[derive(Clone)]
pub struct ConnGuard {
    _alive: mpsc::Sender<()>,
    signal: Arc<Signal>,
}

impl Conns {
    pub fn new() -> Self {
        let (alive, gone) = mpsc::channel(1);
        Self { alive: Some(alive), gone, signals: Vec::new(), prune_at: 64 }
    }

    pub fn guard(&mut self) -> ConnGuard {
        let alive = self.alive.clone().expect("no guard after the drain began");
        let signal = Arc::new(Signal { state: AtomicU8::new(RUNNING), waker: AtomicWaker::new() });
        if self.signals.len() >= self.prune_at {
            self.signals.retain(|s| s.strong_count() > 0);
            self.prune_at = (self.signals.len() * 2).max(64);
        }
        self.signals.push(Arc::downgrade(&signal));
        ConnGuard { _alive: alive, signal }
    }

    /// Asks every connection to finish what it is doing and close.
    pub fn drain(&self) {
        self.raise(DRAINING);
    }

    /// Resolves once every guarded connection has ended.
    pub async fn ended(&mut self) {
        self.alive.take();
        let _ = self.gone.recv().await;
    }

    /// Ends the connections still open.
    pub fn kill(&self) {
        self.raise(KILLED);
    }

    fn raise(&self, to: u8) {
        for signal in self.signals.iter().filter_map(Weak::upgrade) {
            signal.raise(to);
        }
    }
}

impl Default for Conns {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnGuard {
    /// The state now; the task is woken when it changes.
    fn poll_state(&self, cx: &mut Context<'_>) -> u8 {
        self.signal.waker.register(cx.waker());
        self.signal.state.load(Ordering::Acquire)
    }

    /// Resolves when the connection must stop.
    pub async fn killed(&self) {
        std::future::poll_fn(|cx| if self.poll_state(cx) == KILLED { Poll::Ready(()) } else { Poll::Pending }).await
    }

    /// Serves a hyper connection: `shutdown` is called on it once the drain begins, and it
    /// is dropped if still open when killed.
    pub async fn serve<C: Future>(&self, conn: C, shutdown: impl Fn(Pin<&mut C>)) {
        let mut conn = pin!(conn);
        let mut shutting_down = false;
        std::future::poll_fn(|cx| {
            match self.poll_state(cx) {
                KILLED => return Poll::Ready(()),
                DRAINING if !shutting_down => {
                    shutting_down = true;
                    shutdown(conn.as_mut());
                }
                _ => {}
            }
            conn.as_mut().poll(cx).map(|_| ())
        })
        .await
    }
}
