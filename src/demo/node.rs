//! A demo backend node that behaves like a Keycloak pod where it matters to a balancer: it
//! keeps sessions in its own memory and names itself in every answer, so a request that lands
//! on the wrong node is visible as a lost session. The integration tests use it too.
//!
//! Routes:
//! - `/` (and any path not below): the session page. A session cookie
//!   `AUTH_SESSION_ID=<id>.<node>` (Keycloak's shape) is issued on first visit; a later request
//!   carrying a session this node does not hold answers "session lost".
//! - `/echo`: the request line and headers as the node received them.
//! - `/slow?ms=N`: answers after N milliseconds.
//! - `/work?ms=N`: N milliseconds on one of the node's [`WORKERS`] workers, queueing without
//!   bound for one (a Keycloak pod's thread pool, for overload experiments).
//! - `/bytes?n=N`: streams N bytes (64 KiB chunks) without holding them in memory.
//! - `/upload`: reads the whole request body, answers with its length.
//! - `/lb-check`: `UP`, or (see `set_lb_check`) 503 `DOWN`, as a Keycloak site answers.
//! - while `set_busy(true)`: 503 to everything else, as a node shedding load.
//! - `/health/ready`: Keycloak's readiness body, `{"status": "UP"}` or (see `set_ready`) 503
//!   with `{"status": "DOWN"}`.
//! - `/stats`: `connections: N`, the TCP connections this node has accepted (pooling shows).
//! - an `Upgrade` request: 101, then echoes every byte back (a WebSocket-style tunnel).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Workers per node for `/work`: a node's capacity is WORKERS / service time.
pub const WORKERS: usize = 4;

type NodeBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Request targets a node remembers: every one a test sends, while a demo left running under
/// load for hours keeps a bounded memory.
const SEEN_KEPT: usize = 10_000;

/// A running demo node; dropping the handle leaves it running, `stop` ends it.
pub struct DemoNode {
    pub name: String,
    pub addr: SocketAddr,
    stop: CancellationToken,
    state: Arc<NodeState>,
}

impl DemoNode {
    /// Starts a node on `addr` (port 0 picks a free port).
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<DemoNode> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let state = Arc::new(NodeState {
            name: name.to_string(),
            sessions: Mutex::new(HashMap::new()),
            // A per-process random start, so ids from different nodes never look alike.
            next_id: AtomicU64::new(std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                name,
            )),
            connections: AtomicU64::new(0),
            ready: AtomicBool::new(true),
            lb_check_up: AtomicBool::new(true),
            busy: AtomicBool::new(false),
            workers: tokio::sync::Semaphore::new(WORKERS),
            seen: Mutex::new(VecDeque::new()),
        });
        tokio::spawn(serve(listener, state.clone(), stop.clone()));
        Ok(DemoNode {
            name: name.to_string(),
            addr,
            stop,
            state,
        })
    }

    /// The request targets (path and query) this node has received, the last [`SEEN_KEPT`].
    pub fn seen(&self) -> Vec<String> {
        self.state
            .seen
            .lock()
            .expect("seen lock")
            .iter()
            .cloned()
            .collect()
    }

    /// What `/health/ready` answers: `{"status": "UP"}` (200) or `{"status": "DOWN"}` (503).
    pub fn set_ready(&self, ready: bool) {
        self.state.ready.store(ready, Ordering::Relaxed);
    }

    /// What `/lb-check` answers: 200 `UP` or 503 `DOWN` (Keycloak multi-site).
    pub fn set_lb_check(&self, up: bool) {
        self.state.lb_check_up.store(up, Ordering::Relaxed);
    }

    /// While busy, every request but `/lb-check` and `/health/ready` gets 503, as a node
    /// shedding load answers.
    pub fn set_busy(&self, busy: bool) {
        self.state.busy.store(busy, Ordering::Relaxed);
    }

    /// Sessions this node holds.
    pub fn sessions(&self) -> usize {
        self.state.sessions.lock().expect("session map").len()
    }

    /// Stops accepting and closes open connections, like a pod being killed.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether [`DemoNode::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

struct NodeState {
    name: String,
    /// Session id → requests seen in it.
    sessions: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
    connections: AtomicU64,
    ready: AtomicBool,
    lb_check_up: AtomicBool,
    busy: AtomicBool,
    /// `/work` runs on this many workers at once; the others queue (without bound).
    workers: tokio::sync::Semaphore,
    /// The last [`SEEN_KEPT`] request targets received, in order (what a filter in front must
    /// keep out).
    seen: Mutex<VecDeque<String>>,
}

async fn serve(listener: TcpListener, state: Arc<NodeState>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::Relaxed);
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<NodeBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn query_u64(req: &Request<Incoming>, key: &str) -> u64 {
    crate::paths::query_param(req.uri(), key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(state: &NodeState, mut req: Request<Incoming>) -> Response<NodeBody> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    {
        let mut seen = state.seen.lock().expect("seen lock");
        if seen.len() == SEEN_KEPT {
            seen.pop_front();
        }
        seen.push_back(target);
    }
    let probe = matches!(req.uri().path(), "/lb-check" | "/health/ready");
    let mut resp = if state.busy.load(Ordering::Relaxed) && !probe {
        text(StatusCode::SERVICE_UNAVAILABLE, "busy\n".into())
    } else if req.headers().contains_key(header::UPGRADE) {
        upgrade(&mut req)
    } else {
        match req.uri().path() {
            "/echo" => echo(state, &req),
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(query_u64(&req, "ms"))).await;
                text(StatusCode::OK, format!("{} slept\n", state.name))
            }
            "/work" => {
                // Like a request on Keycloak's worker pool: waits, unbounded, for a worker.
                let _worker = state.workers.acquire().await;
                tokio::time::sleep(Duration::from_millis(query_u64(&req, "ms"))).await;
                text(StatusCode::OK, format!("{} worked\n", state.name))
            }
            "/bytes" => stream_bytes(query_u64(&req, "n")),
            "/upload" => {
                let mut body = req.into_body();
                let mut total = 0u64;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    }
                }
                text(StatusCode::OK, format!("{total}\n"))
            }
            "/lb-check" => {
                if state.lb_check_up.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "UP".into())
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "DOWN".into())
                }
            }
            "/health/ready" => {
                if state.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, r#"{"status": "UP", "checks": []}"#.into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"status": "DOWN", "checks": []}"#.into(),
                    )
                }
            }
            "/stats" => text(
                StatusCode::OK,
                format!(
                    "connections: {}\n",
                    state.connections.load(Ordering::Relaxed)
                ),
            ),
            _ => session_page(state, &req),
        }
    };
    resp.headers_mut().insert(
        "x-node",
        HeaderValue::from_str(&state.name).unwrap_or(HeaderValue::from_static("node")),
    );
    resp
}

fn echo(state: &NodeState, req: &Request<Incoming>) -> Response<NodeBody> {
    let mut out = format!(
        "node: {}\n{} {} {:?}\n",
        state.name,
        req.method(),
        req.uri(),
        req.version()
    );
    for (name, value) in req.headers() {
        out.push_str(&format!(
            "{}: {}\n",
            name,
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    let mut resp = text(StatusCode::OK, out);
    // Hop-by-hop headers a misbehaving backend might send; the proxy must not pass them on.
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("x-backend-hop"),
    );
    h.insert("x-backend-hop", HeaderValue::from_static("secret"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
    resp
}

fn stream_bytes(n: u64) -> Response<NodeBody> {
    let body = RepeatBody::new(n);
    let mut resp = Response::new(body.boxed());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    resp
}

/// `left` bytes made of slices of one 64 KiB chunk (slices share the buffer: memory stays
/// flat however large the body). Public so tests can stream large uploads the same way.
pub struct RepeatBody {
    left: u64,
    chunk: Bytes,
}

impl RepeatBody {
    pub fn new(len: u64) -> RepeatBody {
        RepeatBody {
            left: len,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl http_body::Body for RepeatBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let take = this.left.min(this.chunk.len() as u64) as usize;
        this.left -= take as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

fn session_page(state: &NodeState, req: &Request<Incoming>) -> Response<NodeBody> {
    let presented = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("AUTH_SESSION_ID="))
        .map(str::to_owned)
        .next();
    let mut sessions = state.sessions.lock().expect("session map");
    if let Some(cookie) = &presented {
        if let Some(visits) = sessions.get_mut(cookie) {
            *visits += 1;
            return text(
                StatusCode::OK,
                format!(
                    "{}: welcome back, session {cookie}, request {visits}\n",
                    state.name
                ),
            );
        }
    }
    let id = format!(
        "{:016x}.{}",
        state.next_id.fetch_add(1, Ordering::Relaxed),
        state.name
    );
    sessions.insert(id.clone(), 1);
    let message = match presented {
        Some(old) => format!(
            "{}: session {old} is unknown here (it lives on another node): SESSION LOST, new session {id}\n",
            state.name
        ),
        None => format!("{}: new session {id}\n", state.name),
    };
    let mut resp = text(StatusCode::OK, message);
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("AUTH_SESSION_ID={id}; Path=/; HttpOnly")).expect("cookie"),
    );
    resp
}

fn upgrade(req: &mut Request<Incoming>) -> Response<NodeBody> {
    let protocol = req
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("websocket"));
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(header::UPGRADE, protocol);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}
