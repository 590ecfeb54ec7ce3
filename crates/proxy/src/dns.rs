//! Addresses of ExternalName backends. An answer is used for [`FRESH_FOR`]; after that the
//! first request to need the name refreshes it in the background while requests go on with
//! the previous answer, and a failed lookup keeps that answer rather than none. Only the very
//! first lookup (or one after every answer was lost) is waited for.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

/// How long an answer is used before it is looked up again.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

type Lookup = fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// One ExternalName's addresses.
pub struct Resolver {
    host: String,
    port: u16,
    lookup: Lookup,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    addresses: Vec<SocketAddr>,
    /// When `addresses` stops being fresh; None before the first answer.
    fresh_until: Option<Instant>,
    refreshing: bool,
    next: usize,
}

impl Resolver {
    pub fn new(host: String, port: u16) -> Arc<Self> {
        Self::with_lookup(host, port, system_lookup)
    }

    fn with_lookup(host: String, port: u16, lookup: Lookup) -> Arc<Self> {
        Arc::new(Self { host, port, lookup, state: Mutex::default() })
    }

    /// An address of the name, round-robin over the answer; None while it does not resolve.
    pub async fn address(self: &Arc<Self>) -> Option<SocketAddr> {
        {
            let mut state = self.lock();
            let fresh = state.fresh_until.is_some_and(|t| t > Instant::now());
            if !state.addresses.is_empty() {
                if !fresh && !state.refreshing {
                    state.refreshing = true;
                    let this = self.clone();
                    tokio::spawn(async move { this.refresh().await });
                }
                return Some(pick(&mut state));
            }
            if fresh {
                // The last lookup failed, moments ago.
                return None;
            }
        }
        self.refresh().await;
        self.pick()
    }

    fn pick(&self) -> Option<SocketAddr> {
        let mut state = self.lock();
        (!state.addresses.is_empty()).then(|| pick(&mut state))
    }

    async fn refresh(&self) {
        let looked_up = tokio::time::timeout(LOOKUP_TIMEOUT, (self.lookup)(self.host.clone(), self.port)).await;
        let mut state = self.lock();
        state.refreshing = false;
        match looked_up {
            Ok(Ok(addresses)) if !addresses.is_empty() => {
                state.addresses = addresses;
                state.fresh_until = Some(Instant::now() + FRESH_FOR);
            }
            failed => {
                let why = match failed {
                    Ok(Ok(_)) => "no address".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                };
                // Keep the last answer, and try again on the next request after a while.
                tracing::debug!(host = %self.host, "DNS lookup failed: {why}");
                state.fresh_until = Some(Instant::now() + FRESH_FOR);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pick(state: &mut State) -> SocketAddr {
    let address = state.addresses[state.next % state.addresses.len()];
    state.next = state.next.wrapping_add(1);
    address
}

fn system_lookup(host: String, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
    Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static LOOKUPS: AtomicUsize = AtomicUsize::new(0);
    static FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn counting(_host: String, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        let n = LOOKUPS.fetch_add(1, Ordering::SeqCst);
        let failing = FAILING.load(Ordering::SeqCst);
        Box::pin(async move {
            if failing {
                return Err(io::Error::other("no such host"));
            }
            // Each answer names the lookup it came from, in its last octet.
            Ok(vec![SocketAddr::from(([127, 0, 0, n as u8 + 1], port)), SocketAddr::from(([127, 0, 1, 1], port))])
        })
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_reused_refreshed_in_the_background_and_kept_when_a_lookup_fails() {
        let r = Resolver::with_lookup("backend.example".into(), 80, counting);
        let first = r.address().await.unwrap();
        assert_eq!(first, SocketAddr::from(([127, 0, 0, 1], 80)));
        // Fresh: round-robin over the answer, no new lookup.
        assert_eq!(r.address().await.unwrap(), SocketAddr::from(([127, 0, 1, 1], 80)));
        assert_eq!(r.address().await.unwrap(), first);
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 1);

        // Stale: the old answer serves at once while one refresh runs.
        tokio::time::advance(FRESH_FOR + Duration::from_millis(1)).await;
        assert!(r.address().await.is_some());
        assert!(r.address().await.is_some());
        tokio::task::yield_now().await;
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 2, "one refresh, however many requests");
        let refreshed: Vec<_> = [r.address().await.unwrap(), r.address().await.unwrap()].into();
        assert!(refreshed.contains(&SocketAddr::from(([127, 0, 0, 2], 80))), "{refreshed:?}");

        // A failed lookup keeps the last answer.
        FAILING.store(true, Ordering::SeqCst);
        tokio::time::advance(FRESH_FOR + Duration::from_millis(1)).await;
        assert!(r.address().await.is_some());
        tokio::task::yield_now().await;
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 3);
        let kept: Vec<_> = [r.address().await.unwrap(), r.address().await.unwrap()].into();
        assert!(kept.contains(&SocketAddr::from(([127, 0, 0, 2], 80))), "{kept:?}");
    }
}
