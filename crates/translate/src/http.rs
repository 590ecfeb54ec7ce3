//! HTTPRoute and GRPCRoute rules compiled into IR rules and match entries, and the entries of
//! a listener arranged into virtual hosts in precedence order.

use std::{cmp::Reverse, collections::BTreeMap};

use api::{
    Kind,
    route::{
        FilteredBackendRef, GrpcRoute, HttpPathModifier, HttpRoute, HttpRouteFilter, PathMatchType, PathModifierType,
        ValueMatchType,
    },
    validate::parse_duration_ms,
};

use crate::{
    backends::{self, Transport, Unresolved},
    hostname,
    ir::{
        Backend, Cors, ExternalAuth, HeaderModifier, HttpFilter, HttpMatch, HttpRule, Mirror, PathMatch, PathRewrite,
        Redirect, Retry, RouteEntry, RuleAction, StringMatch, Timeouts, UrlRewrite, ValueMatch, VirtualHost,
        WeightedBackend,
    },
    status::reason,
    store::{Object, Snapshot},
};

/// The spec's precedence of one match, smallest first. Ties between routes fall to
/// creation time, then namespace/name, then rule and match order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    path_class: u8,
    path_len: Reverse<usize>,
    no_method: bool,
    headers: Reverse<usize>,
    query_params: Reverse<usize>,
    created: String,
    namespace: String,
    name: String,
    rule: usize,
    index: usize,
}

/// One route's rules, ready to be placed on the listeners it attaches to.
pub struct CompiledRoute {
    pub rules: Vec<HttpRule>,
    /// (match, index into `rules`, precedence)
    pub entries: Vec<(HttpMatch, usize, Precedence)>,
    /// The first unresolved backendRef, for ResolvedRefs.
    pub unresolved: Option<Unresolved>,
    /// Rules left out because they use something not supported (e.g. a CORS filter), each
    /// as "Dropped Rule N: why". All dropped: the route is not accepted.
    pub dropped: Vec<String>,
    /// How many rules the route has.
    pub rule_count: usize,
}

impl CompiledRoute {
    fn new(rule_count: usize) -> Self {
        Self { rules: vec![], entries: vec![], unresolved: None, dropped: vec![], rule_count }
    }
}

pub fn compile_http(
    snapshot: &Snapshot,
    obj: &Object,
    route: &HttpRoute,
    backends: &mut BTreeMap<String, Backend>,
) -> CompiledRoute {
    let (created, namespace, name) = crate::gateways::precedence(obj);
    let mut out = CompiledRoute::new(route.spec.rules.len());
    for (r, rule) in route.spec.rules.iter().enumerate() {
        let label = format!("HTTPRoute/{namespace}/{name}/{}", rule.name.clone().unwrap_or_else(|| r.to_string()));
        let mut ctx = RuleCtx { snapshot, namespace: &namespace, kind: Kind::HttpRoute, backends, out: &mut out };
        let filters = match ctx.filters(&rule.filters, false) {
            Err(FilterError::Unsupported(why)) => {
                out.dropped.push(format!("Dropped Rule {r}: {why}"));
                continue;
            }
            other => other,
        };
        let action = match rule.filters.iter().find_map(|f| f.request_redirect.as_ref()) {
            Some(redirect) => RuleAction::Redirect(Redirect {
                scheme: redirect.scheme.clone(),
                hostname: redirect.hostname.clone(),
                path: redirect.path.as_ref().map(path_rewrite),
                port: redirect.port.map(|p| p as u16),
                status: redirect.status_code,
            }),
            None => ctx.forward(&rule.backend_refs, Transport::Http),
        };
        let filters = match filters {
            Ok(f) => f,
            Err(_) => {
                out.rules.push(HttpRule {
                    route: label,
                    grpc: false,
                    filters: vec![],
                    action: RuleAction::Respond { status: 500 },
                    timeouts: None,
                    retry: None,
                });
                push_http_matches(&mut out, rule, r, &created, &namespace, &name);
                continue;
            }
        };
        let timeouts = rule.timeouts.as_ref().map(|t| Timeouts {
            request_ms: t.request.as_deref().and_then(parse_duration_ms).filter(|ms| *ms > 0),
            backend_request_ms: t.backend_request.as_deref().and_then(parse_duration_ms).filter(|ms| *ms > 0),
        });
        let retry = rule.retry.as_ref().map(|r| Retry {
            codes: r.codes.clone(),
            attempts: r.attempts.unwrap_or(1).max(0) as u32,
            backoff_ms: r.backoff.as_deref().and_then(parse_duration_ms),
        });
        out.rules.push(HttpRule { route: label, grpc: false, filters, action, timeouts, retry });
        push_http_matches(&mut out, rule, r, &created, &namespace, &name);
    }
    out
}

fn push_http_matches(
    out: &mut CompiledRoute,
    rule: &api::route::HttpRouteRule,
    r: usize,
    created: &str,
    namespace: &str,
    name: &str,
) {
    let rule_index = out.rules.len() - 1;
    // An explicitly empty list of matches matches everything, as the default does.
    let default = [api::route::HttpRouteMatch::default()];
    let matches = if rule.matches.is_empty() { &default[..] } else { &rule.matches[..] };
    for (i, m) in matches.iter().enumerate() {
        let path = match m.path.type_ {
            PathMatchType::Exact => PathMatch::Exact(m.path.value.clone()),
            PathMatchType::PathPrefix => PathMatch::Prefix(m.path.value.clone()),
            PathMatchType::RegularExpression => PathMatch::Regex(m.path.value.clone()),
        };
        let matcher = HttpMatch {
            path,
            method: m.method.clone(),
            headers: m.headers.iter().map(|h| value_match(&h.name.to_ascii_lowercase(), h.type_, &h.value)).collect(),
            query_params: m.query_params.iter().map(|q| value_match(&q.name, q.type_, &q.value)).collect(),
        };
        let key = precedence(&matcher, created, namespace, name, r, i);
        out.entries.push((matcher, rule_index, key));
    }
}

fn precedence(m: &HttpMatch, created: &str, namespace: &str, name: &str, rule: usize, index: usize) -> Precedence {
    let (path_class, path_len) = match &m.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::Prefix(p) => (1, p.len()),
        PathMatch::Regex(p) => (2, p.len()),
    };
    Precedence {
        path_class,
        path_len: Reverse(path_len),
        no_method: m.method.is_none(),
        headers: Reverse(m.headers.len()),
        query_params: Reverse(m.query_params.len()),
        created: created.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        rule,
        index,
    }
}

fn value_match(name: &str, type_: ValueMatchType, value: &str) -> ValueMatch {
    ValueMatch {
        name: name.to_string(),
        value: match type_ {
            ValueMatchType::Exact => StringMatch::Exact(value.to_string()),
            ValueMatchType::RegularExpression => StringMatch::Regex(value.to_string()),
        },
    }
}

pub fn compile_grpc(
    snapshot: &Snapshot,
    obj: &Object,
    route: &GrpcRoute,
    backends: &mut BTreeMap<String, Backend>,
) -> CompiledRoute {
    let (created, namespace, name) = crate::gateways::precedence(obj);
    // A GRPCRoute without rules has one that matches everything.
    let mut out = CompiledRoute::new(route.spec.rules.len().max(1));
    let default_rule = [api::route::GrpcRouteRule {
        name: None,
        matches: vec![],
        filters: vec![],
        backend_refs: vec![],
        session_persistence: None,
    }];
    let rules = if route.spec.rules.is_empty() { &default_rule[..] } else { &route.spec.rules[..] };
    for (r, rule) in rules.iter().enumerate() {
        let label = format!("GRPCRoute/{namespace}/{name}/{}", rule.name.clone().unwrap_or_else(|| r.to_string()));
        let mut ctx = RuleCtx { snapshot, namespace: &namespace, kind: Kind::GrpcRoute, backends, out: &mut out };
        let (filters, action) = match ctx.filters(&rule.filters, false) {
            Ok(f) => (f, ctx.forward(&rule.backend_refs, Transport::Grpc)),
            Err(FilterError::Unsupported(why)) => {
                out.dropped.push(format!("Dropped Rule {r}: {why}"));
                continue;
            }
            Err(FilterError::Unresolved) => (vec![], RuleAction::Respond { status: 500 }),
        };
        out.rules.push(HttpRule { route: label, grpc: true, filters, action, timeouts: None, retry: None });
        let rule_index = out.rules.len() - 1;
        let all = [api::route::GrpcRouteMatch::default()];
        let matches = if rule.matches.is_empty() { &all[..] } else { &rule.matches[..] };
        for (i, m) in matches.iter().enumerate() {
            let path = match &m.method {
                None => PathMatch::Prefix("/".into()),
                Some(method) => grpc_path(method),
            };
            let matcher = HttpMatch {
                path,
                method: None,
                headers: m
                    .headers
                    .iter()
                    .map(|h| value_match(&h.name.to_ascii_lowercase(), h.type_, &h.value))
                    .collect(),
                query_params: vec![],
            };
            let key = precedence(&matcher, &created, &namespace, &name, r, i);
            out.entries.push((matcher, rule_index, key));
        }
    }
    out
}

/// A gRPC service/method match as a match on the request path `/<service>/<method>`.
fn grpc_path(m: &api::route::GrpcMethodMatch) -> PathMatch {
    match (m.type_, &m.service, &m.method) {
        (ValueMatchType::Exact, Some(s), Some(me)) => PathMatch::Exact(format!("/{s}/{me}")),
        (ValueMatchType::Exact, Some(s), None) => PathMatch::Prefix(format!("/{s}")),
        (ValueMatchType::Exact, None, Some(me)) => PathMatch::Regex(format!("/[^/]+/{}", regex::escape(me))),
        (ValueMatchType::RegularExpression, s, me) => {
            PathMatch::Regex(format!("/{}/{}", s.as_deref().unwrap_or("[^/]+"), me.as_deref().unwrap_or("[^/]+")))
        }
        (_, None, None) => PathMatch::Prefix("/".into()),
    }
}

fn path_rewrite(p: &HttpPathModifier) -> PathRewrite {
    match p.type_ {
        PathModifierType::ReplaceFullPath => PathRewrite::Full(p.replace_full_path.clone().unwrap_or_default()),
        PathModifierType::ReplacePrefixMatch => PathRewrite::Prefix(p.replace_prefix_match.clone().unwrap_or_default()),
    }
}

/// Why a rule's filters cannot be used.
enum FilterError {
    /// An ExtensionRef that resolves to nothing: the rule answers 500 (spec: never skip it).
    Unresolved,
    /// A filter type gatehouse does not implement: the rule is dropped.
    Unsupported(String),
}

struct RuleCtx<'a, 's> {
    snapshot: &'s Snapshot,
    namespace: &'a str,
    kind: Kind,
    backends: &'a mut BTreeMap<String, Backend>,
    out: &'a mut CompiledRoute,
}

impl RuleCtx<'_, '_> {
    fn note_unresolved(&mut self, u: Unresolved) {
        self.out.unresolved.get_or_insert(u);
    }

    /// A backendRef's backend key; None (noted for ResolvedRefs) when it does not resolve.
    fn resolve(&mut self, backend_ref: &api::route::BackendRef, transport: Transport) -> Option<String> {
        match backends::resolve(self.snapshot, self.kind, self.namespace, backend_ref, transport, self.backends) {
            Ok(key) => Some(key),
            Err(u) => {
                self.note_unresolved(u);
                None
            }
        }
    }

    /// IR filters of a rule, or (`on_backend`) of one of its backendRefs; or why they cannot
    /// be had.
    fn filters(&mut self, filters: &[HttpRouteFilter], on_backend: bool) -> Result<Vec<HttpFilter>, FilterError> {
        let mut out = Vec::new();
        let mut failed = None;
        for f in filters {
            match f.type_.as_str() {
                "RequestHeaderModifier" => {
                    out.push(HttpFilter::RequestHeaders(header_modifier(f.request_header_modifier.as_ref())))
                }
                "ResponseHeaderModifier" => {
                    out.push(HttpFilter::ResponseHeaders(header_modifier(f.response_header_modifier.as_ref())))
                }
                "URLRewrite" => {
                    let rw = f.url_rewrite.as_ref();
                    out.push(HttpFilter::UrlRewrite(UrlRewrite {
                        hostname: rw.and_then(|r| r.hostname.clone()),
                        path: rw.and_then(|r| r.path.as_ref()).map(path_rewrite),
                    }));
                }
                "RequestMirror" => {
                    let Some(m) = &f.request_mirror else { continue };
                    let backend = self.resolve(&m.backend_ref, transport(self.kind));
                    let per_million = match (&m.percent, &m.fraction) {
                        (Some(p), _) => (*p as u32) * 10_000,
                        (None, Some(fr)) if fr.denominator > 0 => {
                            ((i64::from(fr.numerator) * 1_000_000) / i64::from(fr.denominator)) as u32
                        }
                        _ => 1_000_000,
                    };
                    out.push(HttpFilter::Mirror(Mirror { backend, per_million }));
                }
                "CORS" => {
                    let Some(c) = &f.cors else { continue };
                    out.push(HttpFilter::Cors(Cors {
                        allow_origins: c.allow_origins.clone(),
                        allow_credentials: c.allow_credentials.unwrap_or(false),
                        allow_methods: c.allow_methods.clone(),
                        allow_headers: c.allow_headers.clone(),
                        expose_headers: c.expose_headers.clone(),
                        max_age_seconds: c.max_age.max(0) as u32,
                    }));
                }
                "ExternalAuth" => {
                    let Some(a) = &f.external_auth else { continue };
                    // Authorization decides whether a request goes on at all: on one
                    // backendRef, or twice, it has no meaning gatehouse would guess at.
                    let repeated = out.iter().any(|f| matches!(f, HttpFilter::ExternalAuth(_)));
                    let refused = match (on_backend, repeated) {
                        (true, _) => Some("ExternalAuth on a backendRef is not supported"),
                        (_, true) => Some("more than one ExternalAuth filter in a rule is not supported"),
                        _ => None,
                    };
                    if let Some(why) = refused {
                        failed = Some(FilterError::Unsupported(why.to_string()));
                        continue;
                    }
                    let grpc = a.protocol == "GRPC";
                    let backend = self.resolve(&a.backend_ref, if grpc { Transport::Grpc } else { Transport::Http });
                    let http = a.http.clone().unwrap_or_default();
                    let lower = |names: Vec<String>| names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
                    let allowed_headers = match &a.grpc {
                        Some(g) if grpc => g.allowed_headers.clone(),
                        _ => http.allowed_headers,
                    };
                    out.push(HttpFilter::ExternalAuth(ExternalAuth {
                        backend,
                        grpc,
                        path_prefix: http.path.unwrap_or_default(),
                        allowed_headers: lower(allowed_headers),
                        allowed_response_headers: lower(http.allowed_response_headers),
                        max_body: a.forward_body.as_ref().map_or(0, |b| u32::from(b.max_size)),
                    }));
                }
                // Carried out by the rule's action.
                "RequestRedirect" => {}
                other => {
                    let message = match (other, &f.extension_ref) {
                        ("ExtensionRef", Some(e)) => format!(
                            "ExtensionRef to {}/{} {:?} cannot be resolved: no such extension is supported",
                            e.group, e.kind, e.name
                        ),
                        _ => format!("filter type {other} is not supported yet"),
                    };
                    if other == "ExtensionRef" {
                        self.note_unresolved(Unresolved { reason: reason::INVALID_KIND, message });
                        failed.get_or_insert(FilterError::Unresolved);
                    } else {
                        failed = Some(FilterError::Unsupported(message));
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn forward(&mut self, refs: &[FilteredBackendRef], transport: Transport) -> RuleAction {
        let mut backends = Vec::new();
        for b in refs {
            let backend = self.resolve(&b.backend, transport);
            // A backend whose own filters cannot be honoured gets its share answered 500.
            let (filters, backend) = match self.filters(&b.filters, true) {
                Ok(f) => (f, backend),
                Err(_) => (vec![], None),
            };
            backends.push(WeightedBackend { weight: b.backend.weight.max(0) as u32, backend, filters });
        }
        RuleAction::Forward(backends)
    }
}

fn transport(kind: Kind) -> Transport {
    if kind == Kind::GrpcRoute { Transport::Grpc } else { Transport::Http }
}

fn header_modifier(m: Option<&api::route::HeaderModifier>) -> HeaderModifier {
    let Some(m) = m else { return HeaderModifier::default() };
    let pairs =
        |v: &[api::route::HttpHeader]| v.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.clone())).collect();
    HeaderModifier {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}

/// One listener's HTTP routing: rules, and virtual hosts whose entries are in precedence
/// order. A host's own entries come first, then those of every less specific name that also
/// covers it (wildcards, then routes without hostnames), so a request is answered by the
/// most specific hostname that has a matching rule.
pub fn virtual_hosts(routes: &[(&CompiledRoute, &[String])]) -> (Vec<HttpRule>, Vec<VirtualHost>) {
    let mut rules = Vec::new();
    let mut by_host: BTreeMap<String, Vec<(Precedence, RouteEntry)>> = BTreeMap::new();
    for (route, hostnames) in routes {
        let offset = rules.len();
        rules.extend(route.rules.iter().cloned());
        let hosts: Vec<String> = if hostnames.is_empty() { vec!["*".into()] } else { hostnames.to_vec() };
        for host in hosts {
            let list = by_host.entry(host.to_ascii_lowercase()).or_default();
            for (m, rule, key) in &route.entries {
                list.push((key.clone(), RouteEntry { matcher: m.clone(), rule: offset + rule }));
            }
        }
    }
    for list in by_host.values_mut() {
        list.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut names: Vec<&String> = by_host.keys().collect();
    // Most specific first; "*" (no hostname) last.
    names.sort_by_key(|n| (Reverse(n.as_str() != "*"), Reverse(hostname::specificity(n)), n.to_string()));
    let vhosts = names
        .iter()
        .map(|name| {
            let mut entries: Vec<RouteEntry> = by_host[*name].iter().map(|(_, e)| e.clone()).collect();
            for other in &names {
                let covers = *other != *name && (other.as_str() == "*" || hostname::matches(other, name));
                if covers && name.as_str() != "*" {
                    entries.extend(by_host[*other].iter().map(|(_, e)| e.clone()));
                }
            }
            VirtualHost { hostnames: vec![(*name).clone()], routes: entries }
        })
        .collect();
    (rules, vhosts)
}
