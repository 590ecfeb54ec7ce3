//! The IR compiled for serving: regexes built, hosts in maps, backends with their balancing
//! state. Built once per configuration swap; the request path only reads it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use regex::{Regex, RegexSet};
use translate::ir::{self, HttpFilter, PathMatch, RuleAction, StringMatch};

use crate::{
    FastMap, Shared,
    cors::Cors,
    dns::Resolver,
    hostmap::HostMap,
    metrics::{BackendMetrics, ProxyMetrics, RouteMetrics},
    path::has_prefix,
    respond::Refusal,
    upstream::{Pool, Upstream},
    upstream_tls::TlsUpstreams,
};

/// One socket's configuration.
pub struct BindConfig {
    pub listeners: Vec<ListenerConfig>,
    /// The Secret of the certificate presented to TLS backends. A socket serves one
    /// Gateway (with its ListenerSets), so one certificate at most.
    pub backend_client_certificate: Option<String>,
    /// Listener index by hostname (the listener's own).
    pub by_host: HostMap<usize>,
    pub backends: Arc<Backends>,
}

pub struct ListenerConfig {
    pub name: Arc<str>,
    pub hostname: Option<String>,
    pub tls: Option<ir::TlsTermination>,
    pub vhosts: HostMap<Arc<VirtualHost>>,
    pub rules: Vec<Arc<Rule>>,
}

pub struct Entry {
    pub matcher: Matcher,
    pub rule: usize,
}

/// Candidate lists one lookup may gather (one per path segment that has a prefix route).
const MAX_LISTS: usize = 32;

/// Candidate lists gathered on the stack; `n` counts past the capacity to report overflow.
struct Candidates<'a> {
    lists: [&'a [u32]; MAX_LISTS],
    n: usize,
}

impl<'a> Candidates<'a> {
    fn push(&mut self, list: &'a [u32]) {
        if self.n < MAX_LISTS {
            self.lists[self.n] = list;
        }
        self.n += 1;
    }
}

/// A virtual host's entries in precedence order, indexed by path so that a lookup examines
/// only the entries whose path could match: the exact path, each enclosing prefix, and the
/// regexes that match. Candidates are visited in entry order, so the first full match is the
/// one with the highest precedence.
pub struct VirtualHost {
    entries: Vec<Entry>,
    exact: FastMap<String, Vec<u32>>,
    /// By prefix without its trailing `/` (`""` for `/`).
    prefix: FastMap<String, Vec<u32>>,
    /// Regex paths, all tried in one pass; `regex_entries[i]` is the entry of pattern `i`.
    regex: Option<RegexSet>,
    regex_entries: Vec<u32>,
}

impl VirtualHost {
    fn new(entries: Vec<Entry>) -> Self {
        let mut vh = Self {
            entries,
            exact: FastMap::default(),
            prefix: FastMap::default(),
            regex: None,
            regex_entries: Vec::new(),
        };
        let mut patterns = Vec::new();
        for (i, e) in vh.entries.iter().enumerate() {
            let i = i as u32;
            match &e.matcher.path {
                PathMatcher::Exact(p) => vh.exact.entry(p.clone()).or_default().push(i),
                PathMatcher::Prefix(p) => {
                    vh.prefix.entry(p.strip_suffix('/').unwrap_or(p).to_string()).or_default().push(i)
                }
                PathMatcher::Regex(r) => {
                    patterns.push(r.as_str().to_string());
                    vh.regex_entries.push(i);
                }
            }
        }
        // Each pattern compiled alone already, so the set compiles too.
        vh.regex = (!patterns.is_empty()).then(|| RegexSet::new(&patterns).expect("patterns compiled one by one"));
        vh
    }

    pub fn find(
        &self,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
        query: &[(String, String)],
    ) -> Option<&Entry> {
        // Candidate lists, each in entry order: the exact path, each enclosing prefix.
        let mut c = Candidates { lists: [&[]; MAX_LISTS], n: 0 };
        if let Some(l) = self.exact.get(path) {
            c.push(l);
        }
        if !self.prefix.is_empty() {
            if !path.ends_with('/')
                && let Some(l) = self.prefix.get(path)
            {
                c.push(l);
            }
            for (i, b) in path.bytes().enumerate().skip(1) {
                if b == b'/'
                    && let Some(l) = self.prefix.get(&path[..i])
                {
                    c.push(l);
                }
            }
            if let Some(l) = self.prefix.get("") {
                c.push(l);
            }
        }
        if c.n > MAX_LISTS {
            // A pathologically deep path: fall back to trying every entry in order.
            return self.entries.iter().find(|e| e.matcher.matches(method, path, headers, query));
        }
        let lists = &c.lists[..c.n];
        let plain = self.first_match(lists, method, path, headers, query);
        // Regexes cost a pass over the path: only when one could precede the match found.
        let Some(set) = &self.regex else { return plain.map(|i| &self.entries[i as usize]) };
        if plain.is_some_and(|p| self.regex_entries[0] > p) {
            return plain.map(|i| &self.entries[i as usize]);
        }
        let hits: Vec<u32> = set
            .matches(path)
            .into_iter()
            .map(|p| self.regex_entries[p])
            .filter(|i| plain.is_none_or(|p| *i < p))
            .collect();
        self.first_match(&[&hits], method, path, headers, query).or(plain).map(|i| &self.entries[i as usize])
    }

    /// Merges candidate lists by entry index: the first entry that matches in full.
    fn first_match(
        &self,
        lists: &[&[u32]],
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
        query: &[(String, String)],
    ) -> Option<u32> {
        let mut cursors = [0usize; MAX_LISTS];
        loop {
            let (list, &next) = lists
                .iter()
                .enumerate()
                .filter_map(|(l, list)| list.get(cursors[l]).map(|i| (l, i)))
                .min_by_key(|(_, i)| **i)?;
            cursors[list] += 1;
            if self.entries[next as usize].matcher.matches(method, path, headers, query) {
                return Some(next);
            }
        }
    }
}

pub struct Matcher {
    pub path: PathMatcher,
    pub method: Option<http::Method>,
    pub headers: Vec<(http::HeaderName, ValueMatcher)>,
    pub query: Vec<(String, ValueMatcher)>,
}

pub enum PathMatcher {
    Exact(String),
    Prefix(Arc<str>),
    Regex(Regex),
}

pub enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatcher::Exact(e) => e == v,
            ValueMatcher::Regex(r) => r.is_match(v),
        }
    }
}

pub struct Rule {
    pub name: Arc<str>,
    pub metrics: RouteMetrics,
    pub grpc: bool,
    pub filters: Vec<HttpFilter>,
    pub action: Action,
    pub timeouts: Option<ir::Timeouts>,
    pub retry: Option<ir::Retry>,
    pub cors: Option<Cors>,
    pub external_auth: Option<ir::ExternalAuth>,
}

pub enum Action {
    Forward { backends: Vec<(u32, Option<ir::WeightedBackend>)>, total: u32, next: AtomicUsize },
    Redirect(ir::Redirect),
    Respond(u16),
}

/// Backends by key, with a round-robin cursor each.
#[derive(Default)]
pub struct Backends {
    pub by_key: FastMap<String, Backend>,
}

pub struct Backend {
    pub key: Arc<str>,
    pub metrics: BackendMetrics,
    /// The pool of each endpoint, on the backend's own upstream.
    pub endpoints: Vec<Arc<Pool>>,
    /// An ExternalName Service's name, resolved as requests need it.
    pub external_name: Option<Arc<Resolver>>,
    /// How HTTP requests reach it; None when its BackendTLSPolicy cannot be used.
    upstream: Option<Arc<Upstream>>,
    /// Under a BackendTLSPolicy: the upstream presenting each Gateway client certificate.
    by_certificate: HashMap<String, Arc<Upstream>>,
    next: AtomicUsize,
}

impl Backend {
    /// The next endpoint, round-robin.
    pub fn endpoint(&self) -> Option<&Arc<Pool>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(&self.endpoints[i % self.endpoints.len()])
    }

    /// An address to connect to: the next endpoint, or the external name resolved.
    pub async fn target(&self) -> Option<SocketAddr> {
        if let Some(pool) = self.endpoint() {
            return Some(pool.endpoint());
        }
        self.external_name.as_ref()?.address().await
    }

    /// The pool an HTTP request goes out on, from a Gateway that presents `certificate` to
    /// TLS backends.
    pub async fn pool(&self, certificate: Option<&str>) -> Result<Arc<Pool>, Refusal> {
        let upstream = self.upstream.as_ref().ok_or(Refusal::Invalid)?;
        let presenting = certificate.and_then(|c| self.by_certificate.get(c));
        match (self.endpoint(), presenting) {
            (Some(pool), None) => Ok(pool.clone()),
            (Some(pool), Some(upstream)) => Ok(upstream.pool(pool.endpoint())),
            (None, _) => {
                // Boxed: resolving is rare, and would make every request's future larger.
                let address = Box::pin(self.target()).await.ok_or(Refusal::NoEndpoints)?;
                Ok(presenting.unwrap_or(upstream).pool(address))
            }
        }
    }
}

impl Backends {
    pub fn compile(config: &ir::ProxyConfig, shared: &Shared) -> Self {
        let (metrics, upstreams) = (&shared.metrics, &*shared.upstreams);
        // Every client certificate a Gateway presents to TLS backends.
        let mut certificates: Vec<&ir::CertifiedKey> = config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .filter_map(|l| l.backend_client_certificate.as_ref())
            .collect();
        certificates.sort_by(|a, b| a.source.cmp(&b.source));
        certificates.dedup_by(|a, b| a.source == b.source);
        let by_key = config
            .backends
            .iter()
            .map(|(k, b)| {
                let (upstream, by_certificate) = match &b.tls {
                    None => (Some(upstreams.plain(b.protocol.into())), HashMap::new()),
                    Some(tls) => match TlsUpstreams::new(tls, b.protocol, &certificates, upstreams) {
                        Some(t) => (Some(t.anonymous), t.by_certificate),
                        None => (None, HashMap::new()),
                    },
                };
                // A backend whose TLS cannot be used still has endpoints, for TCP routes.
                let pools = upstream.clone().unwrap_or_else(|| upstreams.plain(b.protocol.into()));
                let endpoints = b.endpoints.iter().map(|e| pools.pool(*e)).collect();
                let backend = Backend {
                    key: k.as_str().into(),
                    metrics: metrics.backend(&k.as_str().into()),
                    endpoints,
                    external_name: b.external_name.as_ref().map(|(host, port)| shared.resolvers.get(host, *port)),
                    upstream,
                    by_certificate,
                    next: AtomicUsize::new(0),
                };
                (k.clone(), backend)
            })
            .collect();
        Self { by_key }
    }
}

impl BindConfig {
    /// The listener a request's host selects, and the first entry of its virtual host that
    /// matches. `host` is lower-case without port; `path` is normalized.
    pub fn route(
        &self,
        method: &http::Method,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
        query: &[(String, String)],
    ) -> Option<(usize, &Entry)> {
        let &listener = self.by_host.get(host)?;
        let entry = self.listeners[listener].vhosts.get(host)?.find(method, path, headers, query)?;
        Some((listener, entry))
    }

    pub fn compile(bind: &ir::Bind, backends: Arc<Backends>, metrics: &ProxyMetrics) -> Self {
        let mut by_host = HostMap::default();
        let listeners = bind
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                by_host.insert(l.hostname.as_deref().unwrap_or("*"), i);
                ListenerConfig::compile(l, metrics)
            })
            .collect();
        let backend_client_certificate =
            bind.listeners.iter().find_map(|l| l.backend_client_certificate.as_ref().map(|c| c.source.clone()));
        Self { listeners, by_host, backends, backend_client_certificate }
    }
}

impl ListenerConfig {
    fn compile(l: &ir::Listener, metrics: &ProxyMetrics) -> Self {
        let name: Arc<str> = l.name.as_str().into();
        let rules = l
            .rules
            .iter()
            .map(|r| Arc::new(Rule::compile(r, metrics.route(&name, &r.route.as_str().into()))))
            .collect();
        let mut vhosts = HostMap::default();
        for vh in &l.virtual_hosts {
            let entries = Arc::new(VirtualHost::new(
                vh.routes
                    .iter()
                    .filter_map(|e| Some(Entry { matcher: Matcher::compile(&e.matcher)?, rule: e.rule }))
                    .collect(),
            ));
            for h in &vh.hostnames {
                vhosts.insert(h, entries.clone());
            }
        }
        Self { name, hostname: l.hostname.clone(), tls: l.tls.clone(), vhosts, rules }
    }
}

impl Rule {
    fn compile(r: &ir::HttpRule, metrics: RouteMetrics) -> Self {
        let action = match &r.action {
            RuleAction::Forward(list) => {
                let backends: Vec<(u32, Option<ir::WeightedBackend>)> =
                    list.iter().filter(|b| b.weight > 0).map(|b| (b.weight, Some(b.clone()))).collect();
                let total = backends.iter().map(|(w, _)| *w).sum();
                Action::Forward { backends, total, next: AtomicUsize::new(0) }
            }
            RuleAction::Redirect(r) => Action::Redirect(r.clone()),
            RuleAction::Respond { status } => Action::Respond(*status),
        };
        Self {
            name: r.route.as_str().into(),
            metrics,
            grpc: r.grpc,
            filters: r.filters.clone(),
            action,
            timeouts: r.timeouts.clone(),
            retry: r.retry.clone(),
            cors: r.filters.iter().find_map(|f| match f {
                HttpFilter::Cors(c) => Some(Cors::compile(c)),
                _ => None,
            }),
            external_auth: r.filters.iter().find_map(|f| match f {
                HttpFilter::ExternalAuth(a) => Some(a.clone()),
                _ => None,
            }),
        }
    }

    /// The backend for the next request, spreading requests over backends in proportion to
    /// their weights (a deterministic weighted round-robin). `Err(())` when the share falls
    /// on an invalid backend or there is none (`None`): the request answers 500.
    pub fn pick(&self) -> Option<&ir::WeightedBackend> {
        let Action::Forward { backends, total, next } = &self.action else { return None };
        if *total == 0 {
            return None;
        }
        // Spread with a multiplicative step so consecutive requests interleave backends.
        let n = next.fetch_add(1, Ordering::Relaxed) as u64;
        let mut slot = ((n.wrapping_mul(2_654_435_761)) % u64::from(*total)) as u32;
        for (w, b) in backends {
            if slot < *w {
                return b.as_ref().filter(|b| b.backend.is_some());
            }
            slot -= w;
        }
        None
    }
}

impl Matcher {
    /// `None` when a regex does not compile: translation validated them, so this only guards
    /// against an IR from elsewhere.
    fn compile(m: &ir::HttpMatch) -> Option<Self> {
        let anchored = |re: &str| Regex::new(&format!("^(?:{re})$")).ok();
        let value = |v: &StringMatch| -> Option<ValueMatcher> {
            Some(match v {
                StringMatch::Exact(s) => ValueMatcher::Exact(s.clone()),
                StringMatch::Regex(r) => ValueMatcher::Regex(anchored(r)?),
            })
        };
        Some(Self {
            path: match &m.path {
                PathMatch::Exact(p) => PathMatcher::Exact(p.clone()),
                PathMatch::Prefix(p) => PathMatcher::Prefix(p.as_str().into()),
                PathMatch::Regex(r) => PathMatcher::Regex(anchored(r)?),
            },
            method: m.method.as_deref().and_then(|s| s.parse().ok()),
            headers: m
                .headers
                .iter()
                .map(|h| Some((http::HeaderName::from_bytes(h.name.as_bytes()).ok()?, value(&h.value)?)))
                .collect::<Option<_>>()?,
            query: m.query_params.iter().map(|q| Some((q.name.clone(), value(&q.value)?))).collect::<Option<_>>()?,
        })
    }

    pub fn matches(
        &self,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
        query: &[(String, String)],
    ) -> bool {
        let path_ok = match &self.path {
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Prefix(p) => has_prefix(path, p),
            PathMatcher::Regex(r) => r.is_match(path),
        };
        path_ok
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.headers.iter().all(|(name, v)| {
                // Repeated headers match as their comma-joined value, as HTTP folds them.
                let mut values = headers.get_all(name).iter().filter_map(|h| h.to_str().ok());
                match (values.next(), values.next()) {
                    (None, _) => false,
                    (Some(one), None) => v.matches(one),
                    (Some(first), Some(second)) => {
                        let joined = [first, second].into_iter().chain(values).collect::<Vec<_>>().join(",");
                        v.matches(&joined)
                    }
                }
            })
            // The first value of a repeated parameter is the one matched, as Envoy does.
            && self.query.iter().all(|(name, v)| query.iter().find(|(k, _)| k == name).is_some_and(|(_, val)| v.matches(val)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: PathMatcher, headers: Vec<(http::HeaderName, ValueMatcher)>, rule: usize) -> Entry {
        Entry { matcher: Matcher { path, method: None, headers, query: vec![] }, rule }
    }

    fn find(vh: &VirtualHost, path: &str, headers: &http::HeaderMap) -> Option<usize> {
        vh.find(&http::Method::GET, path, headers, &[]).map(|e| e.rule)
    }

    #[test]
    fn the_index_visits_candidates_in_entry_order() {
        let x = http::HeaderName::from_static("x");
        let vh = VirtualHost::new(vec![
            entry(PathMatcher::Exact("/a/b".into()), vec![(x.clone(), ValueMatcher::Exact("1".into()))], 0),
            entry(PathMatcher::Prefix("/a/b/".into()), vec![], 1),
            entry(PathMatcher::Prefix("/a".into()), vec![], 2),
            entry(PathMatcher::Regex(Regex::new("^(?:/a/[0-9]+)$").unwrap()), vec![], 3),
            // A less specific hostname's entries come after, in their own order.
            entry(PathMatcher::Regex(Regex::new("^(?:/z.*)$").unwrap()), vec![], 4),
            entry(PathMatcher::Exact("/z".into()), vec![], 5),
            entry(PathMatcher::Prefix("/".into()), vec![], 6),
        ]);
        let mut h = http::HeaderMap::new();
        assert_eq!(find(&vh, "/a/b", &h), Some(1), "the exact entry needs its header");
        h.insert(x, "1".parse().unwrap());
        assert_eq!(find(&vh, "/a/b", &h), Some(0));
        assert_eq!(find(&vh, "/a/b/c", &h), Some(1));
        assert_eq!(find(&vh, "/a/7", &h), Some(2), "the prefix precedes the regex");
        assert_eq!(find(&vh, "/abc", &h), Some(6), "prefixes match whole segments");
        assert_eq!(find(&vh, "/z", &h), Some(4), "an earlier regex beats a later exact path");
        assert_eq!(find(&vh, "/", &h), Some(6));
    }
}
