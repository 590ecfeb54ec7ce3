//! End-to-end tests: the real `gatehouse` binary on loopback, driven by real clients, in front
//! of real test backends. One test binary; each test uses ports the OS picks.

mod integration {
    pub mod common;

    mod admin;
    mod backend_tls;
    mod check;
    mod cors;
    mod external_auth;
    mod filters;
    mod forwarding;
    mod grpc;
    mod hostile;
    mod http1;
    mod l4;
    mod lifecycle;
    mod listener_sets;
    mod mirror_retry;
    mod mtls;
    mod reload;
    mod routing;
    mod tls;
    mod upstream_pool;
}
