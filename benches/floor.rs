//! The floor under sessiongate's request path: the least a proxy built on the same hyper and
//! tokio can do. It serves plain HTTP/1.1 and forwards each request as it came, round robin,
//! over kept-alive backend connections. It has no header rewrite, path policy, stickiness,
//! admission, retries, timeouts, metrics or logs. Comparing its CPU per request with
//! sessiongate's and nginx's (BENCHMARKS.md) separates what the libraries cost from what
//! sessiongate's own work costs. It is an experiment, not a proxy: it does no checks at all.
//!
//!     cargo bench --bench floor -- 127.0.0.1:19095 127.0.0.1:19081 127.0.0.1:19082
//!
//! It runs on one current-thread runtime, like `sessiongate --threads 1`, listens on loopback
//! only, and stops after 10 minutes (or on Ctrl-C).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const LIFETIME: Duration = Duration::from_secs(600);

struct Backends {
    addrs: Vec<SocketAddr>,
    idle: Vec<Mutex<Vec<client::SendRequest<Incoming>>>>,
    next: AtomicUsize,
}

fn main() {
    // `cargo bench` appends `--bench`; it is not ours.
    let args: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .map(|a| a.parse().expect("arguments: LISTEN BACKEND..., as IP:PORT"))
        .collect();
    let Some((&listen, backends)) = args.split_first() else {
        return; // `cargo bench` with no arguments runs every bench target: nothing to do here.
    };
    assert!(
        listen.ip().is_loopback() && backends.iter().all(|b| b.ip().is_loopback()),
        "loopback addresses only"
    );
    assert!(!backends.is_empty(), "at least one backend");
    let backends = Arc::new(Backends {
        addrs: backends.to_vec(),
        idle: backends.iter().map(|_| Mutex::default()).collect(),
        next: AtomicUsize::new(0),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        let serve = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let backends = backends.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let backends = backends.clone();
                        async move { forward(&backends, req).await }
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tokio::select! {
            _ = serve => {}
            _ = tokio::time::sleep(LIFETIME) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
}

async fn forward(
    backends: &Backends,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, hyper::Error> {
    let i = backends.next.fetch_add(1, Ordering::Relaxed) % backends.addrs.len();
    let pooled = backends.idle[i].lock().unwrap().pop();
    let mut sender = match pooled {
        Some(sender) => sender,
        None => {
            let stream = TcpStream::connect(backends.addrs[i])
                .await
                .expect("backend connect");
            let _ = stream.set_nodelay(true);
            let (sender, conn) = client::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    // Bodies here are a few bytes: a connection is ready again almost as soon as its head
    // arrives, so it goes back at once and the next user waits for it if it must.
    sender.ready().await?;
    let resp = sender.send_request(req).await;
    if !sender.is_closed() {
        backends.idle[i].lock().unwrap().push(sender);
    }
    resp
}
