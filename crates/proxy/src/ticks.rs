//! Periodic ticks (the sweeps of sockets and pools), and timers that live as long as a
//! connection (a byte stream's idle timeout, HTTP/2 keep-alive), kept off the serving
//! runtime's timers.
//!
//! tokio's time driver works at every park of a thread that has a timer pending: it locks
//! its wheel, finds the next expiry and reads the clock to bound the wait. A proxied request
//! parks twice, so at a low rate that is paid twice per request, yet a request on the plain
//! path sets no timer of its own: only the sweeps, due every second, keep the wheel from
//! being empty, with the timers connections keep for an hour or half a minute. [`start`]
//! gives these a runtime of their own, with a time driver only, on a thread that sleeps
//! until one is due and then wakes the task that waits for it: one cross-thread wake-up per
//! tick or timer that fires. Without it (tests, or a binary that does not call it) they use
//! the runtime they run on. Timers that come and go with a request stay on the serving
//! runtime, where setting one takes no other thread's lock.

use std::{
    pin::Pin,
    sync::{Mutex, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    runtime::Handle,
    time::{Instant, Interval, MissedTickBehavior, Sleep},
};

use crate::lock;

static TICKER: OnceLock<Handle> = OnceLock::new();
/// Held while starting, so that two callers do not start two threads.
static STARTING: Mutex<()> = Mutex::new(());

/// Starts the ticking thread; later calls do nothing.
pub fn start() -> std::io::Result<()> {
    let _starting = lock(&STARTING);
    if TICKER.get().is_none() {
        let _ = TICKER.set(spawn_ticker()?);
    }
    Ok(())
}

/// A runtime with a time driver only, on a thread of its own that does nothing but drive it.
fn spawn_ticker() -> std::io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("gatehouse-ticks".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// An interval whose first tick is now; a tick that comes late delays the next ones.
pub fn interval(period: Duration) -> Interval {
    on_ticker(|| {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick
    })
}

/// A sleep until `deadline`, for a timer that is seldom reset and rarely fires: setting
/// it takes the ticker's lock from another thread, and firing wakes across threads.
pub fn sleep_until(deadline: Instant) -> Sleep {
    on_ticker(|| tokio::time::sleep_until(deadline))
}

/// hyper's timers (HTTP/2 keep-alive: a ping every 30 s, its timeout) on the ticker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timer;

/// A tokio sleep, boxed so that it can be reset through hyper's `dyn Sleep`.
struct TickerSleep(Pin<Box<Sleep>>);

impl Future for TickerSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for TickerSleep {}

// tokio's clock throughout, as hyper-util's timer does: it is the one the sleeps run on,
// and the one a test may pause.
impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TickerSleep(Box::pin(on_ticker(|| tokio::time::sleep(duration)))))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TickerSleep(Box::pin(sleep_until(deadline.into()))))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        // The timer stays with the runtime it was made on.
        match sleep.as_mut().downcast_mut_pin::<TickerSleep>() {
            Some(mut ours) => ours.0.as_mut().reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

fn on_ticker<T>(make: impl FnOnce() -> T) -> T {
    made_on(TICKER.get(), make)
}

/// A timer belongs to the runtime current when it is made: the ticker's, if there is one.
/// Nothing else is made while it is entered.
fn made_on<T>(ticker: Option<&Handle>, make: impl FnOnce() -> T) -> T {
    let _entered = ticker.map(Handle::enter);
    make()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_come_from_the_ticker_to_a_runtime_without_timers() {
        let ticker = spawn_ticker().unwrap();
        // A timer of this runtime's own would panic: it has no time driver.
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let started = std::time::Instant::now();
            let mut tick = made_on(Some(&ticker), || tokio::time::interval(Duration::from_millis(10)));
            for _ in 0..3 {
                tick.tick().await;
            }
            assert!(started.elapsed() >= Duration::from_millis(20), "the first tick is now, the third 20 ms on");
            let deadline = Instant::now() + Duration::from_millis(10);
            made_on(Some(&ticker), || tokio::time::sleep_until(deadline)).await;
            assert!(Instant::now() >= deadline);
        });
    }

    #[test]
    fn hyper_timers_run_on_the_ticker_and_are_reset_there() {
        use hyper::rt::Timer as _;
        let ticker = spawn_ticker().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let started = std::time::Instant::now();
            let mut sleep = made_on(Some(&ticker), || Timer.sleep(Duration::from_millis(10)));
            // Reset from a runtime without timers: it stays the ticker's, and fires later.
            Timer.reset(&mut sleep, started + Duration::from_millis(30));
            sleep.await;
            assert!(started.elapsed() >= Duration::from_millis(30));
        });
    }
}
