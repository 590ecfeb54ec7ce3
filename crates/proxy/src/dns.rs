//! Addresses of ExternalName backends. An answer is used for [`FRESH_FOR`]; after that the
//! first request to need the name refreshes it in the background while requests go on with
//! the previous answer, and a failed lookup keeps that answer rather than none. Only the
//! first lookup is waited for, by one request while the others wait for its answer.
//! [`Resolvers`] hands the same resolver to every configuration, so a reload keeps answers.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::time::Instant;

use crate::lock;

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
    /// Held by the request doing the first lookup.
    first: tokio::sync::Mutex<()>,
}

/// Every ExternalName's resolver, for as long as a configuration uses it.
#[derive(Default)]
pub struct Resolvers(Mutex<HashMap<(String, u16), Weak<Resolver>>>);

impl Resolvers {
    pub fn get(&self, host: &str, port: u16) -> Arc<Resolver> {
        let mut all = lock(&self.0);
        all.retain(|_, r| r.strong_count() > 0);
        let key = (host.to_string(), port);
        if let Some(live) = all.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let made = Resolver::new(key.0.clone(), port);
        all.insert(key, Arc::downgrade(&made));
        made
    }
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
    fn new(host: String, port: u16) -> Arc<Self> {
        Self::with_lookup(host, port, system_lookup)
    }

    fn with_lookup(host: String, port: u16, lookup: Lookup) -> Arc<Self> {
        Arc::new(Self { host, port, lookup, state: Mutex::default(), first: tokio::sync::Mutex::new(()) })
    }

    /// An address of the name, round-robin over the answer; None while it does not resolve.
    pub async fn address(self: &Arc<Self>) -> Option<SocketAddr> {
        if let Some(known) = self.known() {
            return known;
        }
        let _first = self.first.lock().await;
        // Answered (or failed) while this request waited.
        if let Some(known) = self.known() {
            return known;
        }
        self.refresh().await;
        self.pick()
    }

    /// What the answer we have says: an address (refreshing it in the background if stale),
    /// `Some(None)` after a recent failure, None when there is nothing to go on.
    fn known(self: &Arc<Self>) -> Option<Option<SocketAddr>> {
        let mut state = lock(&self.state);
        let fresh = state.fresh_until.is_some_and(|t| t > Instant::now());
        if !state.addresses.is_empty() {
            if !fresh && !state.refreshing {
                state.refreshing = true;
                let this = self.clone();
                tokio::spawn(async move { this.refresh().await });
            }
            return Some(Some(pick(&mut state)));
        }
        // After a lookup that failed moments ago, no answer; else one must be looked up.
        fresh.then_some(None)
    }

    fn pick(&self) -> Option<SocketAddr> {
        let mut state = lock(&self.state);
        (!state.addresses.is_empty()).then(|| pick(&mut state))
    }

    async fn refresh(&self) {
        let looked_up = tokio::time::timeout(LOOKUP_TIMEOUT, (self.lookup)(self.host.clone(), self.port)).await;
        let mut state = lock(&self.state);
        state.refreshing = false;
        match looked_up {
            Ok(Ok(addresses)) if !addresses.is_empty() => state.addresses = addresses,
            // Keep the last answer, and try again on the next request after a while.
            Ok(Ok(_)) => tracing::debug!(host = %self.host, "DNS lookup found no address"),
            Ok(Err(e)) => tracing::debug!(host = %self.host, "DNS lookup failed: {e}"),
            Err(_) => tracing::debug!(host = %self.host, "DNS lookup timed out"),
        }
        state.fresh_until = Some(Instant::now() + FRESH_FOR);
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

    static SLOW_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    fn slow(_host: String, port: u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>> {
        SLOW_LOOKUPS.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(vec![SocketAddr::from(([127, 0, 0, 9], port))])
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_arriving_together_share_the_first_lookup() {
        let r = Resolver::with_lookup("cold.example".into(), 80, slow);
        let asked: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn({
                    let r = r.clone();
                    async move { r.address().await }
                })
            })
            .collect();
        for a in asked {
            assert_eq!(a.await.unwrap(), Some(SocketAddr::from(([127, 0, 0, 9], 80))));
        }
        assert_eq!(SLOW_LOOKUPS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn every_configuration_gets_the_same_resolver_for_a_name() {
        let all = Resolvers::default();
        let a = all.get("backend.example", 80);
        assert!(Arc::ptr_eq(&a, &all.get("backend.example", 80)));
        assert!(!Arc::ptr_eq(&a, &all.get("backend.example", 81)));
    }
}
