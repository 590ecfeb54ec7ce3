//! What the API server checks before storing an object: the CRD schemas' patterns, bounds
//! and CEL rules, with their messages. Standalone mode runs this in place of the API server;
//! an object with any error is rejected whole, as an apply would be.

use std::{net::IpAddr, sync::LazyLock};

use regex::Regex;

use crate::{
    Resource,
    gateway::{Gateway, Listener, TlsMode},
    policy::BackendTlsPolicy,
    route::{
        BackendRef, GrpcRoute, HttpPathModifier, HttpRoute, HttpRouteFilter, HttpRouteMatch, ParentReference,
        PathMatchType, PathModifierType, StreamRoute,
    },
};

static HOSTNAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap());
/// RFC 1123 subdomain: the schema's PreciseHostname, and its SectionName too.
static PRECISE_HOSTNAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap());
static PATH_CHARS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$").unwrap());
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$").unwrap());
static CORS_ORIGIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^\*$)|(^(http(s)?):\/\/(((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:([0-9]{1,5}))?)$)").unwrap()
});
static DURATION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$").unwrap());
static GRPC_SERVICE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$").unwrap());
static GRPC_METHOD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z_0-9]*$").unwrap());

/// Every error the API server would report for `resource`, each prefixed by its field path.
pub fn validate(resource: &Resource) -> Vec<String> {
    let mut v = Errors(Vec::new());
    match resource {
        Resource::Gateway(g) => gateway(&mut v, g),
        Resource::ListenerSet(ls) => listeners(&mut v, "spec.listeners", &ls.spec.listeners),
        Resource::HttpRoute(r) => http_route(&mut v, r),
        Resource::GrpcRoute(r) => grpc_route(&mut v, r),
        Resource::TlsRoute(r) => stream_route(&mut v, r, true),
        Resource::TcpRoute(r) | Resource::UdpRoute(r) => stream_route(&mut v, r, false),
        Resource::BackendTlsPolicy(p) => backend_tls_policy(&mut v, p),
        Resource::GatewayClass(gc) => v.check(
            gc.spec.controller_name.contains('/'),
            "spec.controllerName",
            "must be a domain-prefixed path, such as example.com/controller",
        ),
        Resource::ReferenceGrant(g) => {
            v.check(!g.spec.from.is_empty(), "spec.from", "must have at least 1 item");
            v.check(!g.spec.to.is_empty(), "spec.to", "must have at least 1 item");
        }
        _ => {}
    }
    v.0
}

struct Errors(Vec<String>);

impl Errors {
    fn add(&mut self, path: &str, message: &str) {
        self.0.push(format!("{path}: {message}"));
    }

    fn check(&mut self, ok: bool, path: &str, message: &str) {
        if !ok {
            self.add(path, message);
        }
    }

    fn hostname(&mut self, path: &str, name: &str) {
        self.check(
            !name.is_empty() && name.len() <= 253 && HOSTNAME.is_match(name),
            path,
            &format!("{name:?} is not a valid hostname (lower-case RFC 1123, optionally starting with '*.')"),
        );
    }
}

fn gateway(v: &mut Errors, g: &Gateway) {
    listeners(v, "spec.listeners", &g.spec.listeners);
    v.check(!g.spec.listeners.is_empty(), "spec.listeners", "must have at least 1 item");
    for (i, a) in g.spec.addresses.iter().enumerate() {
        let path = format!("spec.addresses[{i}]");
        match (a.type_.as_str(), a.value.as_deref()) {
            ("IPAddress", Some(value)) => {
                v.check(value.parse::<IpAddr>().is_ok(), &format!("{path}.value"), "must be an IPv4 or IPv6 address");
                let same = g.spec.addresses.iter().filter(|b| b.type_ == a.type_ && b.value.as_deref() == Some(value));
                v.check(same.count() == 1, "spec.addresses", "IPAddress values must be unique");
            }
            ("Hostname", Some(value)) => v.hostname(&format!("{path}.value"), value),
            _ => {}
        }
    }
}

fn listeners(v: &mut Errors, path: &str, listeners: &[Listener]) {
    for (i, l) in listeners.iter().enumerate() {
        let here = format!("{path}[{i}]");
        v.check(PRECISE_HOSTNAME.is_match(&l.name), &format!("{here}.name"), "must be a valid section name");
        v.check((1..=65535).contains(&l.port), &format!("{here}.port"), "must be between 1 and 65535");
        if let Some(h) = &l.hostname {
            v.hostname(&format!("{here}.hostname"), h);
        }
        let proto = l.protocol.as_str();
        if matches!(proto, "HTTP" | "TCP" | "UDP") && l.tls.is_some() {
            v.add(path, "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']");
        }
        if proto == "HTTPS" && l.tls.as_ref().is_some_and(|t| t.mode != TlsMode::Terminate) {
            v.add(path, "tls mode must be Terminate for protocol HTTPS");
        }
        if proto == "TLS" && l.tls.is_none() {
            v.add(path, "tls mode must be set for protocol TLS");
        }
        if matches!(proto, "TCP" | "UDP") && l.hostname.is_some() {
            v.add(path, "hostname must not be specified for protocols ['TCP', 'UDP']");
        }
        if let Some(tls) = &l.tls
            && tls.mode == TlsMode::Terminate
            && tls.certificate_refs.is_empty()
            && tls.options.is_empty()
        {
            v.add(&format!("{here}.tls"), "certificateRefs or options must be specified when mode is Terminate");
        }
        if listeners.iter().filter(|o| o.name == l.name).count() > 1 {
            v.add(path, "Listener name must be unique within the Gateway");
        }
        let same = listeners
            .iter()
            .filter(|o| o.port == l.port && o.protocol == l.protocol && o.hostname == l.hostname)
            .count();
        if same > 1 {
            v.add(path, "Combination of port, protocol and hostname must be unique for each listener");
        }
    }
    v.0.dedup();
}

fn parent_refs(v: &mut Errors, refs: &[ParentReference]) {
    for (i, p) in refs.iter().enumerate() {
        let same_parent: Vec<&ParentReference> = refs
            .iter()
            .filter(|q| q.group == p.group && q.kind == p.kind && q.name == p.name && q.namespace == p.namespace)
            .collect();
        if same_parent.len() < 2 {
            continue;
        }
        let distinguished = |q: &ParentReference| (q.section_name.is_some(), q.port.unwrap_or(0) != 0);
        if same_parent.iter().any(|q| distinguished(q) != distinguished(p)) {
            v.add("spec.parentRefs", "sectionName or port must be specified when parentRefs includes 2 or more references to the same parent");
        }
        let dupes = same_parent
            .iter()
            .filter(|q| q.section_name == p.section_name && q.port.unwrap_or(0) == p.port.unwrap_or(0))
            .count();
        if dupes > 1 {
            v.add(
                "spec.parentRefs",
                "sectionName or port must be unique when parentRefs includes 2 or more references to the same parent",
            );
        }
        let _ = i;
    }
    v.0.dedup();
}

fn backend_ref(v: &mut Errors, path: &str, b: &BackendRef) {
    if b.group.is_empty() && b.kind == "Service" && b.port.is_none() {
        v.add(path, "Must have port for Service reference");
    }
    v.check((0..=1_000_000).contains(&b.weight), &format!("{path}.weight"), "must be between 0 and 1000000");
}

fn hostnames(v: &mut Errors, names: &[String]) {
    for (i, h) in names.iter().enumerate() {
        v.hostname(&format!("spec.hostnames[{i}]"), h);
    }
}

fn rule_names<'a>(v: &mut Errors, names: impl Iterator<Item = Option<&'a String>> + Clone) {
    for (i, name) in names.clone().enumerate() {
        if let Some(name) = name {
            v.check(PRECISE_HOSTNAME.is_match(name), &format!("spec.rules[{i}].name"), "must be a valid section name");
            if names.clone().filter(|n| *n == Some(name)).count() > 1 {
                v.add("spec.rules", "Rule name must be unique within the route");
            }
        }
    }
    v.0.dedup();
}

fn http_route(v: &mut Errors, r: &HttpRoute) {
    parent_refs(v, &r.spec.common.parent_refs);
    hostnames(v, &r.spec.common.hostnames);
    rule_names(v, r.spec.rules.iter().map(|r| r.name.as_ref()));
    let total: usize = r.spec.rules.iter().map(|r| r.matches.len()).sum();
    if total > 128 {
        v.add("spec.rules", "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128");
    }
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            http_match(v, &format!("{path}.matches[{j}]"), m);
        }
        if !rule.backend_refs.is_empty() && rule.filters.iter().any(|f| f.request_redirect.is_some()) {
            v.add(&path, "RequestRedirect filter must not be used together with backendRefs");
        }
        let one_prefix = rule.matches.len() == 1 && rule.matches[0].path.type_ == PathMatchType::PathPrefix;
        if uses_prefix_replace(&rule.filters, |f| f.request_redirect.as_ref().and_then(|r| r.path.as_ref()))
            && !one_prefix
        {
            v.add(&path, "When using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
        }
        if uses_prefix_replace(&rule.filters, |f| f.url_rewrite.as_ref().and_then(|r| r.path.as_ref())) && !one_prefix {
            v.add(&path, "When using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
        }
        filters(v, &format!("{path}.filters"), &rule.filters, true);
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let bpath = format!("{path}.backendRefs[{j}]");
            backend_ref(v, &bpath, &b.backend);
            filters(v, &format!("{bpath}.filters"), &b.filters, true);
        }
        if let Some(t) = &rule.timeouts {
            for (name, value) in [("request", &t.request), ("backendRequest", &t.backend_request)] {
                if let Some(d) = value {
                    v.check(
                        DURATION.is_match(d),
                        &format!("{path}.timeouts.{name}"),
                        "must be a duration such as 10s or 1m30s",
                    );
                }
            }
            if let (Some(req), Some(be)) = (
                t.request.as_deref().and_then(parse_duration_ms),
                t.backend_request.as_deref().and_then(parse_duration_ms),
            ) && req != 0
                && be > req
            {
                v.add(&format!("{path}.timeouts"), "backendRequest timeout cannot be longer than request timeout");
            }
        }
        if let Some(retry) = &rule.retry {
            for code in &retry.codes {
                v.check((400..=599).contains(code), &format!("{path}.retry.codes"), "must be between 400 and 599");
            }
            if let Some(b) = &retry.backoff {
                v.check(DURATION.is_match(b), &format!("{path}.retry.backoff"), "must be a duration such as 100ms");
            }
        }
    }
}

fn uses_prefix_replace(
    filters: &[HttpRouteFilter],
    path: impl Fn(&HttpRouteFilter) -> Option<&HttpPathModifier>,
) -> bool {
    filters
        .iter()
        .filter_map(path)
        .any(|p| p.type_ == PathModifierType::ReplacePrefixMatch && p.replace_prefix_match.is_some())
}

fn http_match(v: &mut Errors, path: &str, m: &HttpRouteMatch) {
    let value = &m.path.value;
    let p = format!("{path}.path");
    if m.path.type_ != PathMatchType::RegularExpression {
        let types = "when type one of ['Exact', 'PathPrefix']";
        v.check(value.starts_with('/'), &p, &format!("value must be an absolute path and start with '/' {types}"));
        for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
            v.check(!value.contains(bad), &p, &format!("must not contain '{bad}' {types}"));
        }
        for bad in ["/..", "/."] {
            v.check(!value.ends_with(bad), &p, &format!("must not end with '{bad}' {types}"));
        }
        v.check(PATH_CHARS.is_match(value), &p, "must only contain valid characters (matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']");
    } else {
        v.check(Regex::new(value).is_ok(), &p, &format!("{value:?} is not a valid regular expression"));
    }
    v.check(value.len() <= 1024, &p, "value must be at most 1024 characters");
    for (kind, list) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
        for (i, h) in list.iter().enumerate() {
            v.check(HEADER_NAME.is_match(&h.name), &format!("{path}.{kind}[{i}].name"), "must be a valid header name");
            if list.iter().filter(|o| o.name == h.name).count() > 1 {
                v.add(&format!("{path}.{kind}[{i}]"), "Duplicate value");
            }
        }
    }
    if let Some(method) = &m.method {
        v.check(
            matches!(
                method.as_str(),
                "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
            ),
            &format!("{path}.method"),
            "must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH",
        );
    }
}

const HTTP_FILTERS: [&str; 8] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
    "ExternalAuth",
];
const GRPC_FILTERS: [&str; 4] = ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"];

fn filters(v: &mut Errors, path: &str, filters: &[HttpRouteFilter], http: bool) {
    let allowed: &[&str] = if http { &HTTP_FILTERS } else { &GRPC_FILTERS };
    for (i, f) in filters.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if !allowed.contains(&f.type_.as_str()) {
            v.add(
                &format!("{here}.type"),
                &format!("unsupported value {:?}: supported values are {allowed:?}", f.type_),
            );
            continue;
        }
        let fields = [
            ("requestHeaderModifier", "RequestHeaderModifier", f.request_header_modifier.is_some()),
            ("responseHeaderModifier", "ResponseHeaderModifier", f.response_header_modifier.is_some()),
            ("requestMirror", "RequestMirror", f.request_mirror.is_some()),
            ("requestRedirect", "RequestRedirect", f.request_redirect.is_some()),
            ("urlRewrite", "URLRewrite", f.url_rewrite.is_some()),
            ("extensionRef", "ExtensionRef", f.extension_ref.is_some()),
            ("cors", "CORS", f.cors.is_some()),
            ("externalAuth", "ExternalAuth", f.external_auth.is_some()),
        ];
        for (field, type_, present) in fields {
            if present && f.type_ != type_ {
                v.add(&here, &format!("filter.{field} must be nil if the filter.type is not {type_}"));
            }
            if !present && f.type_ == type_ {
                v.add(&here, &format!("filter.{field} must be specified for {type_} filter.type"));
            }
        }
        if let Some(m) = &f.request_mirror {
            backend_ref(v, &format!("{here}.requestMirror.backendRef"), &m.backend_ref);
            if m.percent.is_some() && m.fraction.is_some() {
                v.add(
                    &format!("{here}.requestMirror"),
                    "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
                );
            }
            if let Some(p) = m.percent {
                v.check((0..=100).contains(&p), &format!("{here}.requestMirror.percent"), "must be between 0 and 100");
            }
            if let Some(fr) = &m.fraction {
                v.check(
                    fr.denominator >= 1 && fr.numerator >= 0,
                    &format!("{here}.requestMirror.fraction"),
                    "numerator must be >= 0 and denominator >= 1",
                );
                v.check(
                    fr.numerator <= fr.denominator,
                    &format!("{here}.requestMirror.fraction"),
                    "numerator must be less than or equal to denominator",
                );
            }
        }
        if let Some(a) = &f.external_auth {
            let at = format!("{here}.externalAuth");
            backend_ref(v, &format!("{at}.backendRef"), &a.backend_ref);
            if a.protocol != "GRPC" && a.protocol != "HTTP" {
                v.add(
                    &format!("{at}.protocol"),
                    &format!("unsupported value {:?}: supported values are GRPC, HTTP", a.protocol),
                );
            }
            let (grpc, http) = (a.protocol == "GRPC", a.protocol == "HTTP");
            v.check(!grpc || a.grpc.is_some(), &at, "grpc must be specified when protocol is set to 'GRPC'");
            v.check(a.grpc.is_none() || grpc, &at, "protocol must be 'GRPC' when grpc is set");
            v.check(!http || a.http.is_some(), &at, "http must be specified when protocol is set to 'HTTP'");
            v.check(a.http.is_none() || http, &at, "protocol must be 'HTTP' when http is set");
        }
        if let Some(r) = &f.request_redirect {
            if let Some(s) = &r.scheme {
                v.check(
                    s == "http" || s == "https",
                    &format!("{here}.requestRedirect.scheme"),
                    "must be http or https",
                );
            }
            if let Some(h) = &r.hostname {
                v.check(
                    PRECISE_HOSTNAME.is_match(h),
                    &format!("{here}.requestRedirect.hostname"),
                    "must be a valid precise hostname",
                );
            }
            if let Some(p) = r.port {
                v.check(
                    (1..=65535).contains(&p),
                    &format!("{here}.requestRedirect.port"),
                    "must be between 1 and 65535",
                );
            }
            v.check(
                [301, 302, 303, 307, 308].contains(&r.status_code),
                &format!("{here}.requestRedirect.statusCode"),
                "must be one of 301, 302, 303, 307, 308",
            );
            if let Some(p) = &r.path {
                path_modifier(v, &format!("{here}.requestRedirect.path"), p);
            }
        }
        if let Some(c) = &f.cors {
            let here = format!("{here}.cors");
            for (field, list, what) in [
                ("allowOrigins", &c.allow_origins, "origins"),
                ("allowMethods", &c.allow_methods, "methods"),
                // "methods" for headers too: the CRD's own message.
                ("allowHeaders", &c.allow_headers, "methods"),
            ] {
                if list.iter().any(|o| o == "*") && list.len() > 1 {
                    let name = &field[..1].to_uppercase();
                    v.add(
                        &format!("{here}.{field}"),
                        &format!("{name}{} cannot contain '*' alongside other {what}", &field[1..]),
                    );
                }
            }
            for (i, o) in c.allow_origins.iter().enumerate() {
                v.check(
                    CORS_ORIGIN.is_match(o),
                    &format!("{here}.allowOrigins[{i}]"),
                    &format!("{o:?} is not a valid origin"),
                );
            }
            v.check(c.max_age >= 1, &format!("{here}.maxAge"), "must be at least 1");
        }
        if let Some(r) = &f.url_rewrite {
            if let Some(h) = &r.hostname {
                v.check(
                    PRECISE_HOSTNAME.is_match(h),
                    &format!("{here}.urlRewrite.hostname"),
                    "must be a valid precise hostname",
                );
            }
            if let Some(p) = &r.path {
                path_modifier(v, &format!("{here}.urlRewrite.path"), p);
            }
        }
    }
    if filters.iter().any(|f| f.type_ == "RequestRedirect") && filters.iter().any(|f| f.type_ == "URLRewrite") {
        v.add(path, "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both");
    }
    for once in ["CORS", "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"] {
        if filters.iter().filter(|f| f.type_ == once).count() > 1 {
            v.add(path, &format!("{once} filter cannot be repeated"));
        }
    }
}

fn path_modifier(v: &mut Errors, path: &str, p: &HttpPathModifier) {
    match p.type_ {
        PathModifierType::ReplaceFullPath => {
            v.check(
                p.replace_full_path.is_some(),
                path,
                "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
            );
            v.check(
                p.replace_prefix_match.is_none(),
                path,
                "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
            );
        }
        PathModifierType::ReplacePrefixMatch => {
            v.check(
                p.replace_prefix_match.is_some(),
                path,
                "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'",
            );
            v.check(p.replace_full_path.is_none(), path, "type must be 'ReplaceFullPath' when replaceFullPath is set");
        }
    }
}

fn grpc_route(v: &mut Errors, r: &GrpcRoute) {
    parent_refs(v, &r.spec.common.parent_refs);
    hostnames(v, &r.spec.common.hostnames);
    rule_names(v, r.spec.rules.iter().map(|r| r.name.as_ref()));
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let Some(method) = &m.method else { continue };
            let mpath = format!("{path}.matches[{j}].method");
            v.check(
                method.service.is_some() || method.method.is_some(),
                &mpath,
                "One or both of 'service' or 'method' must be specified",
            );
            if method.type_ == crate::route::ValueMatchType::Exact {
                if let Some(s) = &method.service {
                    v.check(GRPC_SERVICE.is_match(s), &mpath, "service must only contain valid characters (matching ^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$)");
                }
                if let Some(m) = &method.method {
                    v.check(
                        GRPC_METHOD.is_match(m),
                        &mpath,
                        "method must only contain valid characters (matching ^[A-Za-z_][A-Za-z_0-9]*$)",
                    );
                }
            } else {
                for re in [&method.service, &method.method].into_iter().flatten() {
                    v.check(Regex::new(re).is_ok(), &mpath, &format!("{re:?} is not a valid regular expression"));
                }
            }
        }
        filters(v, &format!("{path}.filters"), &rule.filters, false);
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let bpath = format!("{path}.backendRefs[{j}]");
            backend_ref(v, &bpath, &b.backend);
            filters(v, &format!("{bpath}.filters"), &b.filters, false);
        }
    }
}

fn stream_route(v: &mut Errors, r: &StreamRoute, tls: bool) {
    parent_refs(v, &r.spec.common.parent_refs);
    if tls {
        for (i, h) in r.spec.common.hostnames.iter().enumerate() {
            v.check(h.parse::<IpAddr>().is_err(), &format!("spec.hostnames[{i}]"), "Hostnames cannot contain an IP");
        }
        hostnames(v, &r.spec.common.hostnames);
    } else if !r.spec.common.hostnames.is_empty() {
        v.add("spec.hostnames", "field not declared in schema");
    }
    v.check(!r.spec.rules.is_empty(), "spec.rules", "must have at least 1 item");
    rule_names(v, r.spec.rules.iter().map(|r| r.name.as_ref()));
    for (i, rule) in r.spec.rules.iter().enumerate() {
        v.check(!rule.backend_refs.is_empty(), &format!("spec.rules[{i}].backendRefs"), "must have at least 1 item");
        for (j, b) in rule.backend_refs.iter().enumerate() {
            backend_ref(v, &format!("spec.rules[{i}].backendRefs[{j}]"), b);
        }
    }
}

fn backend_tls_policy(v: &mut Errors, p: &BackendTlsPolicy) {
    let val = &p.spec.validation;
    v.check(!p.spec.target_refs.is_empty(), "spec.targetRefs", "must have at least 1 item");
    for t in &p.spec.target_refs {
        let same: Vec<_> =
            p.spec.target_refs.iter().filter(|o| o.group == t.group && o.kind == t.kind && o.name == t.name).collect();
        if same.iter().any(|o| o.section_name.is_some() != t.section_name.is_some()) {
            v.add(
                "spec.targetRefs",
                "sectionName must be specified when targetRefs includes 2 or more references to the same target",
            );
        }
        if same.iter().filter(|o| o.section_name == t.section_name).count() > 1 {
            v.add(
                "spec.targetRefs",
                "sectionName must be unique when targetRefs includes 2 or more references to the same target",
            );
        }
    }
    let has_refs = !val.ca_certificate_refs.is_empty();
    let has_well_known = val.well_known_ca_certificates.as_deref().is_some_and(|s| !s.is_empty());
    if has_refs && has_well_known {
        v.add("spec.validation", "must not contain both CACertificateRefs and WellKnownCACertificates");
    }
    if !has_refs && !has_well_known {
        v.add("spec.validation", "must specify either CACertificateRefs or WellKnownCACertificates");
    }
    v.check(PRECISE_HOSTNAME.is_match(&val.hostname), "spec.validation.hostname", "must be a valid precise hostname");
    for (i, san) in val.subject_alt_names.iter().enumerate() {
        let path = format!("spec.validation.subjectAltNames[{i}]");
        let hostname = san.hostname.as_deref().is_some_and(|h| !h.is_empty());
        let uri = san.uri.as_deref().is_some_and(|u| !u.is_empty());
        match san.type_.as_str() {
            "Hostname" => {
                v.check(hostname, &path, "SubjectAltName element must contain Hostname, if Type is set to Hostname");
                v.check(!uri, &path, "SubjectAltName element must not contain URI, if Type is not set to URI");
            }
            "URI" => {
                v.check(uri, &path, "SubjectAltName element must contain URI, if Type is set to URI");
                v.check(
                    !hostname,
                    &path,
                    "SubjectAltName element must not contain Hostname, if Type is not set to Hostname",
                );
            }
            other => v.add(
                &format!("{path}.type"),
                &format!("unsupported value {other:?}: supported values are Hostname, URI"),
            ),
        }
    }
    v.0.dedup();
}

/// A Gateway API `Duration` (`1h30m`, `500ms`) in milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    if !DURATION.is_match(text) {
        return None;
    }
    let mut total = 0u64;
    let mut digits = 0u64;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(d) = c.to_digit(10) {
            digits = digits * 10 + u64::from(d);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                1
            }
            ('h', _) => 3_600_000,
            ('m', _) => 60_000,
            ('s', _) => 1_000,
            _ => return None,
        };
        total += digits * unit;
        digits = 0;
    }
    Some(total)
}

#[cfg(test)]
mod tests;
