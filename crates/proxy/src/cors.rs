//! CORS (the Gateway API's HTTPCORSFilter): preflight requests from allowed origins are
//! answered here; responses to requests from allowed origins carry the CORS headers. A
//! request from an origin that is not allowed gets no CORS header, so browsers refuse it.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use regex::Regex;
use translate::ir;

use crate::{Body, respond::empty};

pub struct Cors {
    origins: Vec<Origin>,
    credentials: bool,
    methods: Option<HeaderValue>,
    any_method: bool,
    headers: Option<HeaderValue>,
    any_header: bool,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

enum Origin {
    Any,
    Exact(String),
    /// `https://*.example.com`, as an anchored pattern.
    Pattern(Regex),
}

fn joined(list: &[String]) -> Option<HeaderValue> {
    (!list.is_empty()).then(|| HeaderValue::from_str(&list.join(", ")).ok()).flatten()
}

impl Cors {
    pub fn compile(c: &ir::Cors) -> Self {
        let origins = c
            .allow_origins
            .iter()
            .filter_map(|o| match o.as_str() {
                "*" => Some(Origin::Any),
                o if o.contains('*') => {
                    let re = format!("^{}$", regex::escape(&o.to_ascii_lowercase()).replace(r"\*", "[a-z0-9.-]+"));
                    Regex::new(&re).ok().map(Origin::Pattern)
                }
                o => Some(Origin::Exact(o.to_ascii_lowercase())),
            })
            .collect();
        let any = |l: &[String]| l.iter().any(|m| m == "*");
        Cors {
            origins,
            credentials: c.allow_credentials,
            any_method: any(&c.allow_methods),
            methods: joined(&c.allow_methods),
            any_header: any(&c.allow_headers),
            headers: joined(&c.allow_headers),
            expose: joined(&c.expose_headers),
            max_age: HeaderValue::from(c.max_age_seconds),
        }
    }

    /// The request's Origin, if it is allowed.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins
            .iter()
            .any(|o| match o {
                Origin::Any => true,
                Origin::Exact(e) => *e == text,
                Origin::Pattern(p) => p.is_match(&text),
            })
            .then(|| origin.clone())
    }

    /// A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight: the grant when the origin is allowed, none otherwise.
    pub fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::OK;
        let Some(origin) = self.allowed_origin(headers) else { return response };
        let h = response.headers_mut();
        self.allow_origin(h, origin);
        // With credentials a browser does not accept `*`: echo what was asked for.
        let methods = match (self.any_method && self.credentials, &self.methods) {
            (true, _) => headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).cloned(),
            (false, m) => m.clone(),
        };
        if let Some(m) = methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        let allowed_headers = match (self.any_header && self.credentials, &self.headers) {
            (true, _) => headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
            (false, a) => a.clone(),
        };
        if let Some(a) = allowed_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, a);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        response
    }

    /// The CORS headers of a response to an allowed origin.
    pub fn decorate(&self, response: &mut HeaderMap, origin: HeaderValue) {
        self.allow_origin(response, origin);
        if let Some(e) = &self.expose {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }

    fn allow_origin(&self, h: &mut HeaderMap, origin: HeaderValue) {
        let wildcard = self.origins.iter().any(|o| matches!(o, Origin::Any)) && !self.credentials;
        if wildcard {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::compile(&ir::Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["*".into()],
            expose_headers: vec!["x-total".into()],
            max_age_seconds: 60,
        })
    }

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h
    }

    #[test]
    fn origins_exact_wildcard_and_any() {
        let c = cors(&["https://app.example", "https://*.example.org"], false);
        assert!(c.allowed_origin(&with_origin("https://app.example")).is_some());
        assert!(c.allowed_origin(&with_origin("https://a.b.example.org")).is_some());
        assert!(c.allowed_origin(&with_origin("https://example.org")).is_none());
        assert!(c.allowed_origin(&with_origin("http://app.example")).is_none(), "the scheme counts");
        assert!(c.allowed_origin(&HeaderMap::new()).is_none());
        assert!(cors(&["*"], false).allowed_origin(&with_origin("https://x.example")).is_some());
    }

    #[test]
    fn preflight_grants_and_echoes_under_credentials() {
        let mut h = with_origin("https://app.example");
        h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, "POST".parse().unwrap());
        h.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-token".parse().unwrap());
        let r = cors(&["https://app.example"], true).preflight(&h);
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-token", "`*` is echoed with credentials");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_MAX_AGE], "60");
        let refused = cors(&["https://other.example"], true).preflight(&h);
        assert!(refused.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }
}
