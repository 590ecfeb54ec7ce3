//! Memory for requests in flight, reused from one request to the next on a worker thread
//! whatever connection they come on, as nginx reuses a request's pool and frees an idle
//! keep-alive connection's buffers.
//!
//! A request's futures nest several kilobytes deep. Laid out inside its connection's task,
//! each request wrote its state into memory that its connection last touched a request
//! ago: at fifty connections, long out of cache (`bench/load/README.md`). Here a request
//! runs in a [`Runner`]: a loop, allocated once, that takes a job, runs it to its end and
//! waits for the next, so that each request writes into memory the request before it has
//! just left. A job's future is built in place inside the loop, where a future moved into
//! a fresh or recycled box would be copied whole, kilobytes, on every request.
//!
//! Buffers, likewise, are lent to HTTP/1.1 connections while they read or answer a request
//! ([`buffer`]), and taken back while they wait for the next: the kernel copies a request
//! into memory the last one warmed, and an idle connection holds none. So are the header
//! maps that requests and responses are parsed into ([`header_map`]).

use std::{
    any::{Any, TypeId},
    cell::RefCell,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    thread::LocalKey,
};

use bytes::BytesMut;
use http::HeaderMap;

use crate::lock;

/// Idle runners kept per kind of job and thread; past these, runners are freed.
const IDLE: usize = 64;
/// The capacity of a lent buffer.
const BUFFER: usize = 8 * 1024;
/// Header maps kept are those with room for at most this many fields.
const HEADERS: usize = 128;
/// Spare buffers and header maps a thread keeps, of each.
const SPARES: usize = 64;

type Spares<T> = RefCell<Vec<T>>;

thread_local! {
    /// This thread's idle runners, by the type of the function they run: a
    /// `Vec<Runner<J, O>>` for each.
    static IDLE_RUNNERS: RefCell<Vec<(TypeId, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
    static BUFFERS: Spares<BytesMut> = const { RefCell::new(Vec::new()) };
    static HEADER_MAPS: Spares<HeaderMap> = const { RefCell::new(Vec::new()) };
}

fn take_spare<T: 'static>(spares: &'static LocalKey<Spares<T>>) -> Option<T> {
    spares.try_with(|spares| spares.borrow_mut().pop()).ok().flatten()
}

fn keep_spare<T: 'static>(spares: &'static LocalKey<Spares<T>>, spare: T) {
    let _ = spares.try_with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARES {
            spares.push(spare);
        }
    });
}

/// An empty buffer of at least [`BUFFER`] bytes, the one this thread was last given back
/// if it has one.
pub fn buffer() -> BytesMut {
    let mut buf = take_spare(&BUFFERS).unwrap_or_default();
    // No allocation when the buffer is no longer shared with what was split off it.
    buf.reserve(BUFFER);
    buf
}

/// Takes back a buffer for [`buffer`] to lend again, if it is empty.
pub fn give_back(buf: BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        keep_spare(&BUFFERS, buf);
    }
}

/// An empty header map with room for `fields`: the one this thread was last given back if
/// it has one. A request and its response each carry one, parsed into and then written out.
pub fn header_map(fields: usize) -> HeaderMap {
    let mut map = take_spare(&HEADER_MAPS).unwrap_or_default();
    map.reserve(fields);
    map
}

/// Takes back a header map that has been written out, for [`header_map`].
pub fn give_back_headers(mut map: HeaderMap) {
    if map.capacity() > 0 && map.capacity() <= HEADERS {
        map.clear();
        keep_spare(&HEADER_MAPS, map);
    }
}

/// A loop that runs jobs of one kind, one at a time, handed over in its mailbox.
struct Runner<J, O> {
    mailbox: Arc<Mailbox<J, O>>,
    run: Pin<Box<dyn Future<Output = ()> + Send>>,
}

struct Mailbox<J, O> {
    job: Mutex<Option<J>>,
    output: Mutex<Option<O>>,
    /// Set once the output is in: until then the holder looks with a load, not a lock.
    done: AtomicBool,
}

/// The output of `work(job)`, run by one of this thread's idle runners of `work`, or by a
/// new one. Runners are filed by the type of `work`, so it is a function, or a closure
/// that captures nothing: everything a job needs comes in `job`.
pub fn run<W, J, O, F>(work: W, job: J) -> Running<W, J, O>
where
    W: Fn(J) -> F + Send + 'static,
    F: Future<Output = O> + Send + 'static,
    J: Send + 'static,
    O: Send + 'static,
{
    const { assert!(std::mem::size_of::<W>() == 0, "a runner's work captures nothing") };
    let idle = IDLE_RUNNERS.try_with(|idle| runners_of::<W, J, O, _>(idle, Vec::pop)).ok().flatten();
    let runner = idle.unwrap_or_else(|| Runner::new(work));
    *lock(&runner.mailbox.job) = Some(job);
    Running { runner: Some(runner), work: PhantomData }
}

/// `f` applied to this thread's idle runners of `W`.
fn runners_of<W: 'static, J: 'static, O: 'static, R>(
    idle: &RefCell<Vec<(TypeId, Box<dyn Any>)>>,
    f: impl FnOnce(&mut Vec<Runner<J, O>>) -> R,
) -> R {
    let mut idle = idle.borrow_mut();
    let kind = TypeId::of::<W>();
    let i = match idle.iter().position(|(k, _)| *k == kind) {
        Some(i) => i,
        None => {
            idle.push((kind, Box::new(Vec::<Runner<J, O>>::new())));
            idle.len() - 1
        }
    };
    f(idle[i].1.downcast_mut().expect("runners are filed under their function's type"))
}

impl<J: Send + 'static, O: Send + 'static> Runner<J, O> {
    fn new<W, F>(work: W) -> Self
    where
        W: Fn(J) -> F + Send + 'static,
        F: Future<Output = O> + Send + 'static,
    {
        let mailbox =
            Arc::new(Mailbox { job: Mutex::new(None), output: Mutex::new(None), done: AtomicBool::new(false) });
        let inbox = mailbox.clone();
        let run = Box::pin(async move {
            loop {
                // Polled only by whoever handed it a job (`Running`), so it needs no waker.
                let job = std::future::poll_fn(|_| lock(&inbox.job).take().map_or(Poll::Pending, Poll::Ready)).await;
                let output = work(job).await;
                *lock(&inbox.output) = Some(output);
                inbox.done.store(true, Ordering::Release);
            }
        });
        Runner { mailbox, run }
    }
}

/// A job being run: resolves to its output, and hands its runner back to the thread's idle
/// ones. Dropped before, it drops the runner, and with it the job.
pub struct Running<W, J: 'static, O: 'static> {
    runner: Option<Runner<J, O>>,
    work: PhantomData<fn() -> W>,
}

impl<W: 'static, J: 'static, O: 'static> Future for Running<W, J, O> {
    type Output = O;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let runner = self.runner.as_mut().expect("a job is not polled once it is done");
        // Never ready: it runs jobs for ever, and sets their output aside.
        let _ = runner.run.as_mut().poll(cx);
        if !runner.mailbox.done.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        runner.mailbox.done.store(false, Ordering::Relaxed);
        let output = lock(&runner.mailbox.output).take().expect("the output is in before it is said to be");
        if let Some(runner) = self.runner.take() {
            let _ = IDLE_RUNNERS.try_with(|idle| {
                runners_of::<W, J, O, _>(idle, |idle| {
                    if idle.len() < IDLE {
                        idle.push(runner);
                    }
                })
            });
        }
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, task::Waker};

    use super::*;

    /// A job that holds `held` until it finishes or is dropped, and finishes once `go` is set.
    async fn job((held, go, n): (Arc<()>, Arc<Mutex<bool>>, u32)) -> u32 {
        let _held = held;
        std::future::poll_fn(|_| if *lock(&go) { Poll::Ready(n) } else { Poll::Pending }).await
    }

    fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn mailbox<W, J, O>(running: &Running<W, J, O>) -> *const Mailbox<J, O> {
        Arc::as_ptr(&running.runner.as_ref().expect("running").mailbox)
    }

    #[test]
    fn a_finished_jobs_runner_takes_the_next_job_and_a_dropped_one_is_not_reused() {
        let held = Arc::new(());
        let go = Arc::new(Mutex::new(true));
        let mut first = run(job, (held.clone(), go.clone(), 1));
        let runner = mailbox(&first);
        assert_eq!(poll(&mut first), Poll::Ready(1));
        assert_eq!(Arc::strong_count(&held), 1, "a finished job's state is dropped");

        *lock(&go) = false;
        let mut second = run(job, (held.clone(), go.clone(), 2));
        assert_eq!(mailbox(&second), runner, "the idle runner is reused");
        // Another job at once gets a runner of its own.
        let mut third = run(job, (held.clone(), go.clone(), 3));
        assert_ne!(mailbox(&third), runner);
        assert!(poll(&mut second).is_pending() && poll(&mut third).is_pending());
        assert_eq!(Arc::strong_count(&held), 3);

        // Dropped unfinished, a job's state goes with it, and so does its runner.
        drop(third);
        assert_eq!(Arc::strong_count(&held), 2);
        *lock(&go) = true;
        assert_eq!(poll(&mut second), Poll::Ready(2));
        let fourth = run(job, (held.clone(), go.clone(), 4));
        assert_eq!(mailbox(&fourth), runner, "only the finished job's runner is idle");
    }

    #[test]
    fn buffers_and_header_maps_come_back_empty_and_keep_their_memory() {
        let mut buf = buffer();
        assert!(buf.capacity() >= BUFFER);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split().freeze();
        let memory = head.as_ptr();
        give_back(buf);
        drop(head);
        let again = buffer();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), memory, "the memory the last request used");

        let mut map = header_map(4);
        map.insert(http::header::HOST, "example.com".parse().unwrap());
        let room = map.capacity();
        give_back_headers(map);
        let again = header_map(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
    }
}
