//! UDP listeners (UDPRoute). A flow is a client address and port: its first datagram picks a
//! backend (by weight) and an endpoint (round-robin), and the flow gets its own connected
//! upstream socket, so replies are told apart by socket. Replies leave from the listener's
//! socket, which is bound to the Gateway's address (not a wildcard), so they come from the
//! address and port the client sent to. A flow ends after [`FLOW_IDLE`] without a datagram
//! either way; at most [`MAX_FLOWS`] flows exist at once, so a flood of sources cannot
//! exhaust memory or file descriptors.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{
    net::UdpSocket,
    sync::{oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    metrics::{ProxyMetrics, StreamCounters},
    server::BindState,
};

/// A flow with no datagram either way for this long is forgotten; the client's next datagram
/// starts a new flow, balanced afresh.
pub const FLOW_IDLE: Duration = Duration::from_secs(60);
/// Flows per socket. A new client beyond it is dropped, after idle flows were swept.
pub const MAX_FLOWS: usize = 65_536;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// How often a full table may be swept for idle flows.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Binds the listener's socket. Without `SO_REUSEADDR`: on UDP it would let two processes
/// share the port instead of reporting it in use.
pub fn bind(address: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(address)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

struct Flow {
    upstream: UdpSocket,
    /// Milliseconds since the socket's epoch of the last datagram either way.
    last_ms: AtomicU64,
    counters: StreamCounters,
}

impl Flow {
    fn touch(&self, epoch: Instant) {
        self.last_ms.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self, epoch: Instant) -> Duration {
        epoch.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddr, (Arc<Flow>, JoinHandle<()>)>>>;

/// Serves datagrams until `stop` changes; then drops every flow and closes the socket
/// (signalled on `closed`). UDP has no connections to drain.
pub async fn serve(
    socket: UdpSocket,
    state: Arc<ArcSwap<BindState>>,
    metrics: ProxyMetrics,
    mut stop: watch::Receiver<Option<Duration>>,
    closed: oneshot::Sender<()>,
) {
    let socket = Arc::new(socket);
    let local = socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let flows: Flows = Arc::default();
    let epoch = Instant::now();
    let mut last_sweep = epoch;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                // An ICMP error for an earlier reply, on some platforms: not the socket's end.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused) => continue,
                Err(e) => {
                    tracing::warn!(%local, "UDP receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let datagram = &buf[..n];
        let existing = flows.lock().unwrap().get(&client).map(|(f, _)| f.clone());
        let flow = match existing {
            Some(flow) => flow,
            None => {
                if flows.lock().unwrap().len() >= MAX_FLOWS {
                    if last_sweep.elapsed() >= SWEEP_INTERVAL {
                        last_sweep = Instant::now();
                        sweep(&flows, epoch);
                    }
                    if flows.lock().unwrap().len() >= MAX_FLOWS {
                        tracing::debug!(%local, %client, "too many UDP flows; datagram dropped");
                        continue;
                    }
                }
                let Some(flow) = open_flow(&state, &metrics, epoch).await else { continue };
                let task = tokio::spawn(replies(flow.clone(), client, socket.clone(), flows.clone(), epoch));
                flows.lock().unwrap().insert(client, (flow.clone(), task));
                flow
            }
        };
        flow.touch(epoch);
        // A full send buffer drops the datagram, as the network may.
        if flow.upstream.try_send(datagram).is_ok() {
            flow.counters.received.inc_by(n as u64);
        }
    }
    // The flows' tasks hold the socket too: it is closed once they are gone.
    let tasks: Vec<JoinHandle<()>> = flows.lock().unwrap().drain().map(|(_, (_, task))| task).collect();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    drop(socket);
    let _ = closed.send(());
}

/// A new flow: the oldest route's backend by weight, an endpoint, a socket connected to it.
async fn open_flow(state: &ArcSwap<BindState>, metrics: &ProxyMetrics, epoch: Instant) -> Option<Arc<Flow>> {
    let config = state.load().stream.clone()?;
    let (listener, route) = config.first_route()?;
    let target = config.target(route).await?;
    let any = match target.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let upstream = match UdpSocket::bind((any, 0)).await {
        Ok(s) => s,
        Err(e) => {
            // Out of file descriptors under a flood, typically: per datagram, so not a warning.
            tracing::debug!(route = %route.name, "cannot open a UDP socket: {e}");
            return None;
        }
    };
    upstream.connect(target).await.ok()?;
    let counters = metrics.stream(&listener.name, &route.name);
    let flow = Arc::new(Flow { upstream, last_ms: AtomicU64::new(0), counters });
    flow.touch(epoch);
    Some(flow)
}

/// Sends the backend's replies to the client until the flow idles out.
async fn replies(flow: Arc<Flow>, client: SocketAddr, socket: Arc<UdpSocket>, flows: Flows, epoch: Instant) {
    loop {
        let idle = flow.idle_for(epoch);
        if idle >= FLOW_IDLE {
            break;
        }
        match tokio::time::timeout(FLOW_IDLE - idle, flow.upstream.readable()).await {
            Err(_) => continue,
            Ok(Err(_)) => break,
            Ok(Ok(())) => {}
        }
        // Allocated per datagram (not zeroed): an idle flow holds no buffer.
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        match flow.upstream.try_recv_buf(&mut buf) {
            Ok(_) => {
                flow.touch(epoch);
                if socket.try_send_to(&buf, client).is_ok() {
                    flow.counters.sent.inc_by(buf.len() as u64);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The backend's port was closed (ICMP): a later datagram may find it open again.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) => break,
        }
    }
    let mut flows = flows.lock().unwrap();
    if flows.get(&client).is_some_and(|(f, _)| Arc::ptr_eq(f, &flow)) {
        flows.remove(&client);
    }
}

/// Forgets the flows idle for [`FLOW_IDLE`] (their tasks may not have noticed yet).
fn sweep(flows: &Flows, epoch: Instant) {
    flows.lock().unwrap().retain(|_, (flow, task)| {
        let keep = flow.idle_for(epoch) < FLOW_IDLE;
        if !keep {
            task.abort();
        }
        keep
    });
}
