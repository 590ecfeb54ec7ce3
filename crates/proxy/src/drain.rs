//! Ending a socket's connections. Each connection holds a [`ConnGuard`]; the socket's
//! [`Conns`] counts them, asks them to finish (HTTP connections stop taking requests, byte
//! streams go on) and, at the drain deadline, to stop at once. A connection looks at its
//! signal whenever its task is polled: an atomic load, and a waker registration when the
//! state has changed since the last, cheaper on every request than a watch channel.
//!
//! The same sweep ends connections that wait too long for a request head, whether idle
//! between requests or sent one byte at a time: a connection marks when it starts and stops
//! waiting (an atomic store each), and the socket counts its sweeps once a second. HTTP/1.1
//! may wait 10 s; HTTP/2, whose clients keep connections for later calls, a minute with no
//! stream open (nginx's `client_header_timeout`), which also bounds a head sent slowly.
//! A timer per request (as hyper's header timeout was) cost 5% of a proxied request's
//! instructions.

use std::{
    pin::{Pin, pin},
    sync::{
        Arc, Weak,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use atomic_waker::AtomicWaker;
use tokio::sync::mpsc;

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const KILLED: u8 = 2;

/// How often a socket sweeps its connections, and how many sweeps one may wait through for
/// a request head: an HTTP/1.1 connection is ended after 9 to 10 s, an HTTP/2 one after a
/// minute.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
pub const HTTP1_HEAD_WAIT_SWEEPS: u8 = 10;
pub const HTTP2_IDLE_SWEEPS: u8 = 60;
/// Not waiting for a request head (or not HTTP/1.1).
const NOT_WAITING: u8 = u8::MAX;
/// Waited too long: being ended, whatever arrives now.
const ENDED: u8 = u8::MAX - 1;

/// One connection's signal: its state, and the task to wake when it changes.
struct Signal {
    state: AtomicU8,
    waker: AtomicWaker,
    /// Sweeps seen while waiting for a request head, or [`NOT_WAITING`].
    head_wait: AtomicU8,
    /// How many sweeps it may wait through; 0 while its waits are not counted (before the
    /// protocol is known, and for byte streams).
    head_wait_limit: AtomicU8,
}

impl Signal {
    /// Wakes the connection only if the state changes: a connection registers its waker
    /// again only when it sees a change (`ConnGuard::serve`).
    fn raise(&self, to: u8) {
        if self.state.fetch_max(to, Ordering::AcqRel) < to {
            self.waker.wake();
        }
    }
}

/// A socket's connections.
pub struct Conns {
    alive: Option<mpsc::Sender<()>>,
    gone: Option<mpsc::Receiver<()>>,
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
        Self { alive: Some(alive), gone: Some(gone), signals: Vec::new(), prune_at: 64 }
    }

    pub fn guard(&mut self) -> ConnGuard {
        let alive = self.alive.clone().expect("no guard after the drain began");
        let signal = Arc::new(Signal {
            state: AtomicU8::new(RUNNING),
            waker: AtomicWaker::new(),
            head_wait: AtomicU8::new(NOT_WAITING),
            head_wait_limit: AtomicU8::new(0),
        });
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

    /// Resolves once every guarded connection has ended. It borrows nothing, so that the
    /// socket can go on sweeping while it waits.
    pub fn ended(&mut self) -> impl Future<Output = ()> + use<> {
        self.alive.take();
        let gone = self.gone.take();
        async move {
            if let Some(mut gone) = gone {
                let _ = gone.recv().await;
            }
        }
    }

    /// Ends the connections still open.
    pub fn kill(&self) {
        self.raise(KILLED);
    }

    /// Counts one more sweep for every connection waiting for a request head, and ends
    /// those that have waited through as many as their protocol allows.
    pub fn sweep(&mut self) {
        self.signals.retain(|s| s.strong_count() > 0);
        for signal in self.signals.iter().filter_map(Weak::upgrade) {
            let seen = signal.head_wait.load(Ordering::Relaxed);
            if seen >= ENDED {
                continue;
            }
            // Either exchange loses to a head arriving meanwhile: then it is not waiting.
            let limit = signal.head_wait_limit.load(Ordering::Relaxed);
            let next = if seen + 1 >= limit { ENDED } else { seen + 1 };
            if signal.head_wait.compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                && next == ENDED
            {
                signal.raise(KILLED);
            }
        }
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
    /// Counts this connection's waits for request heads from now on, each allowed `sweeps`
    /// sweeps, starting with the first.
    pub fn watch_heads(&self, sweeps: u8) {
        self.signal.head_wait_limit.store(sweeps.clamp(1, ENDED - 1), Ordering::Relaxed);
        self.awaiting_head();
    }

    /// The connection waits for the next request head.
    pub fn awaiting_head(&self) {
        if self.signal.head_wait_limit.load(Ordering::Relaxed) != 0 {
            self.signal.head_wait.store(0, Ordering::Relaxed);
        }
    }

    /// The connection moved bytes (wrote a response, read a request body): while it waits
    /// for a head, the count starts again, so that a client slowly reading the end of a
    /// response, or still sending a body a backend answered early, is not taken for an idle
    /// one (and one that does neither is cut off).
    pub fn progressed(&self) {
        let wait = &self.signal.head_wait;
        let seen = wait.load(Ordering::Relaxed);
        if seen != 0 && seen < ENDED {
            let _ = wait.compare_exchange(seen, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A request head has arrived. False if the connection waited too long and is being
    /// ended: the request must not go anywhere.
    pub fn head_arrived(&self) -> bool {
        self.signal.head_wait.swap(NOT_WAITING, Ordering::Relaxed) != ENDED
    }

    /// The state now; the task is woken when it changes.
    fn poll_state(&self, cx: &mut Context<'_>) -> u8 {
        self.signal.waker.register(cx.waker());
        self.state()
    }

    fn state(&self) -> u8 {
        self.signal.state.load(Ordering::Acquire)
    }

    /// Whether the socket drains: the connection takes no new request. The task is woken
    /// when that changes.
    pub fn poll_draining(&self, cx: &mut Context<'_>) -> bool {
        self.poll_state(cx) != RUNNING
    }

    pub fn is_draining(&self) -> bool {
        self.state() != RUNNING
    }

    /// Resolves when the connection must stop.
    pub async fn killed(&self) {
        std::future::poll_fn(|cx| if self.poll_state(cx) == KILLED { Poll::Ready(()) } else { Poll::Pending }).await
    }

    /// Serves a connection: `shutdown` is called on it once the drain begins (HTTP/1.1's
    /// loop looks at the drain itself), and it is dropped if still open when killed.
    pub async fn serve<C: Future>(&self, conn: C, shutdown: impl Fn(Pin<&mut C>)) {
        let mut conn = pin!(conn);
        let mut shutting_down = false;
        // The state when this task's waker was last registered: the signal wakes it (and
        // forgets it) only on a change of state, so until one it need not register again.
        let mut registered: Option<(u8, Waker)> = None;
        std::future::poll_fn(|cx| {
            let state = match &registered {
                Some((seen, waker)) if waker.will_wake(cx.waker()) && self.state() == *seen => *seen,
                _ => {
                    let state = self.poll_state(cx);
                    registered = Some((state, cx.waker().clone()));
                    state
                }
            };
            match state {
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

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, AtomicUsize},
        task::Wake,
    };

    use super::*;

    struct Counting(AtomicUsize);
    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_served_connection_is_woken_to_shut_down_and_again_to_end() {
        let mut conns = Conns::new();
        let guard = conns.guard();
        let wakes = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let shut_down = AtomicBool::new(false);
        let mut serving = pin!(guard.serve(std::future::pending::<()>(), |_| shut_down.store(true, Ordering::Relaxed)));
        for _ in 0..3 {
            assert!(serving.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
        conns.drain();
        conns.drain();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "woken once, by the change");
        assert!(serving.as_mut().poll(&mut cx).is_pending());
        assert!(shut_down.load(Ordering::Relaxed));
        conns.kill();
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2, "registered again after the first change");
        assert!(serving.as_mut().poll(&mut cx).is_ready());
    }

    fn state(guard: &ConnGuard) -> u8 {
        guard.signal.state.load(Ordering::Acquire)
    }

    #[test]
    fn a_connection_waiting_through_ten_sweeps_for_a_head_is_ended() {
        let mut conns = Conns::new();
        let (http1, unwatched) = (conns.guard(), conns.guard());
        http1.watch_heads(HTTP1_HEAD_WAIT_SWEEPS);
        for _ in 0..HTTP1_HEAD_WAIT_SWEEPS - 1 {
            conns.sweep();
        }
        assert_eq!(state(&http1), RUNNING, "not yet");
        // A head arrives: the count starts again when the next wait does.
        http1.head_arrived();
        conns.sweep();
        http1.awaiting_head();
        for _ in 0..HTTP1_HEAD_WAIT_SWEEPS - 1 {
            conns.sweep();
        }
        assert_eq!(state(&http1), RUNNING);
        conns.sweep();
        assert_eq!(state(&http1), KILLED);
        // A head arriving once the end is decided is refused.
        assert!(!http1.head_arrived());
        // Writing restarts the count of a connection waiting for a head.
        let slow_reader = conns.guard();
        slow_reader.watch_heads(HTTP1_HEAD_WAIT_SWEEPS);
        for _ in 0..HTTP1_HEAD_WAIT_SWEEPS * 2 {
            conns.sweep();
            slow_reader.progressed();
        }
        assert_eq!(state(&slow_reader), RUNNING);
        assert!(slow_reader.head_arrived());
        // Connections not watched (byte streams) are not counted, even when told they wait.
        unwatched.awaiting_head();
        for _ in 0..HTTP2_IDLE_SWEEPS * 2 {
            conns.sweep();
        }
        assert_eq!(state(&unwatched), RUNNING);
        // HTTP/2 connections wait longer.
        let http2 = conns.guard();
        http2.watch_heads(HTTP2_IDLE_SWEEPS);
        for _ in 0..HTTP2_IDLE_SWEEPS - 1 {
            conns.sweep();
        }
        assert_eq!(state(&http2), RUNNING);
        conns.sweep();
        assert_eq!(state(&http2), KILLED);
    }
}
