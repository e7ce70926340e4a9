//! The load shapes of `benches/compare.sh` that wrk and h2load do not provide.
//!
//! `latency URL RATE SECONDS CONNECTIONS`: open-loop plain HTTP/1.1 at a fixed rate over
//! keep-alive connections. Connection k sends its j-th request at start + (j·C + k)/RATE,
//! whether or not the proxy kept up; a request that starts late because the one before it was
//! slow is timed from when it should have started (no coordinated omission). Tokio's timer
//! wakes at millisecond ticks, so a request sent on time is timed from the moment it is
//! actually written: the tick's rounding is the same for every target and is not counted.
//! After one second of warm-up it prints `p50_us p99_us p999_us sent errors`.
//!
//! `hold URL CONNECTIONS CA_FILE`: opens that many HTTPS connections (TLS 1.3, HTTP/1.1), sends
//! one GET on each, keeps them all open and idle, prints `ready N`, and waits until killed. The
//! harness reads the proxy's memory before and after.
//!
//! `newtls URL SECONDS CONNECTIONS CA_FILE`: CONNECTIONS loops, each opening a TLS 1.3
//! connection, sending one `Connection: close` GET, reading the answer and starting again,
//! for SECONDS, every handshake a full one: the client keeps no sessions. (wrk cannot do this:
//! it keeps each connection's TLS session across reconnects, so all but its first handshake
//! per connection resume.) Prints `connections resumed errors`.
//!
//! `resume URL SECONDS CONNECTIONS CA_FILE`: the same, but each loop keeps its own session
//! cache, so from its second connection on a handshake resumes with a ticket the previous one
//! got, as a returning browser does.
//!
//! `LOADGEN_PQ=1` makes the TLS client offer X25519MLKEM768 first, as browsers do; by default
//! it offers X25519 first, as wrk and h2load do.
//!
//! Traffic goes only where the URL says; the harness gives 127.0.0.1. All stop by themselves
//! (`latency`, `newtls` and `resume` after their time, `hold` when the harness kills it).
//!
//!     cargo bench --bench loadgen -- latency http://127.0.0.1:8080/ 20000 10 50

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WARM_UP: Duration = Duration::from_secs(1);
/// Handshakes in progress at once while `hold` opens its connections.
const OPENING: usize = 256;

fn main() {
    // `cargo bench` appends `--bench`; it is not ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["latency", url, rate, secs, conns] => runtime.block_on(latency(
            target(url),
            rate.parse().expect("RATE"),
            Duration::from_secs_f64(secs.parse().expect("SECONDS")),
            conns.parse().expect("CONNECTIONS"),
        )),
        ["hold", url, conns, ca] => {
            runtime.block_on(hold(target(url), conns.parse().expect("CONNECTIONS"), ca))
        }
        [mode @ ("newtls" | "resume"), url, secs, conns, ca] => runtime.block_on(reconnect(
            target(url),
            Duration::from_secs_f64(secs.parse().expect("SECONDS")),
            conns.parse().expect("CONNECTIONS"),
            ca,
            mode == "resume",
        )),
        [] => {} // `cargo bench` with no arguments runs every bench target: nothing to do here.
        _ => {
            eprintln!("usage: loadgen latency URL RATE SECONDS CONNECTIONS | hold URL CONNECTIONS CA_FILE | newtls|resume URL SECONDS CONNECTIONS CA_FILE");
            std::process::exit(2);
        }
    }
}

/// The address and request URI of a `http(s)://127.0.0.1:PORT/path` URL.
fn target(url: &str) -> (SocketAddr, http::Uri) {
    let uri: http::Uri = url.parse().expect("URL");
    let addr = uri
        .authority()
        .expect("URL with host:port")
        .as_str()
        .parse()
        .expect("URL host must be an IP address and port");
    (addr, uri)
}

fn get(uri: &http::Uri) -> http::Request<Empty<Bytes>> {
    http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            uri.authority().expect("authority").as_str(),
        )
        .body(Empty::new())
        .expect("request")
}

async fn latency((addr, uri): (SocketAddr, http::Uri), rate: f64, run: Duration, conns: usize) {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + WARM_UP;
    let end = measure_from + run;
    let errors = Arc::new(AtomicU64::new(0));
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        uri.path_and_query().map_or("/", |p| p.as_str()),
        uri.authority().expect("authority")
    )
    .into_bytes()
    .into();
    let mut tasks = Vec::new();
    for k in 0..conns {
        let (request, errors) = (request.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = Vec::with_capacity(4096);
            for j in 0u64.. {
                let due =
                    start + Duration::from_secs_f64((j as f64 * conns as f64 + k as f64) / rate);
                if due >= end {
                    break;
                }
                let began = if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due // late because the last answer was: that wait is latency too
                };
                if !matches!(exchange(&mut stream, &request, &mut buf).await, Ok(true)) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if due >= measure_from {
                    samples.push(began.elapsed().as_micros() as u32);
                }
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("connection task"));
    }
    all.sort_unstable();
    let at = |p: f64| {
        all.get(((all.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} {} {} {} {}",
        at(0.50),
        at(0.99),
        at(0.999),
        all.len(),
        errors.load(Ordering::Relaxed)
    );
}

/// One request on a kept-alive connection and its whole answer: `Ok(true)` for a 2xx.
///
/// By hand, not with hyper's client: that runs each connection as two tasks with a channel
/// between them and cost this generator about 15 us of CPU per request, against wrk's 9. At
/// the latency leg's rates it shares core 1 with the backends, and the less it takes there the
/// less of the tail is its own queueing. Answers must carry Content-Length, as the harness's
/// backends' do; anything else counts as an error.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> io::Result<bool> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    stream.write_all(request).await?;
    buf.clear();
    let (head, length, ok) = loop {
        read_more(stream, buf).await?;
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(head) = response
            .parse(buf)
            .map_err(|_| invalid("malformed response head"))?
        {
            let length = response
                .headers
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case("content-length"))
                .and_then(|f| {
                    std::str::from_utf8(f.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or_else(|| invalid("no Content-Length"))?;
            let ok = response.code.is_some_and(|c| (200..300).contains(&c));
            break (head, length, ok);
        }
    };
    while buf.len() < head + length {
        read_more(stream, buf).await?;
    }
    if buf.len() > head + length {
        return Err(invalid("more than the answer asked for"));
    }
    Ok(ok)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(4096);
    match stream.read_buf(buf).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// A TLS 1.3, HTTP/1.1 client trusting the harness's CA, with its own session cache if it is
/// to `resume`. All clients share one `CheckOnce`, so the server is verified once per process.
fn tls_client(verifier: &Arc<CheckOnce>, resume: bool) -> tokio_rustls::TlsConnector {
    let mut config = rustls::ClientConfig::builder_with_provider(client_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The groups and suites ring's provider offered, as in every run before sessiongate moved to
/// aws-lc-rs, and what wrk and h2load (OpenSSL 3.0) offer: X25519 first, no post-quantum group,
/// which none of the three proxies would be offered by them either. Not sessiongate's own
/// provider, whose AES-128-first order could change what nginx and HAProxy negotiate where they
/// follow the client's order. With `LOADGEN_PQ=1` the client offers X25519MLKEM768 first, as
/// browsers do, to measure what a post-quantum handshake costs (sessiongate alone has one).
fn client_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::kx_group::{SECP256R1, SECP384R1, X25519, X25519MLKEM768};
    let mut kx_groups = vec![X25519, SECP256R1, SECP384R1];
    if std::env::var_os("LOADGEN_PQ").is_some_and(|v| v == "1") {
        kx_groups.insert(0, X25519MLKEM768);
    }
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups,
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// Verifies the server fully (its chain to the CA and its handshake signature) until that has
/// succeeded once, then only checks that later handshakes present the same certificate.
///
/// A load generator that verified every handshake would spend two ECDSA P-256 verifications
/// per new connection: a third of its CPU (`perf`), which is the server's work in reverse. It
/// shares its core with the backends, so it, not the proxy, would set the pace, and a proxy
/// whose core waits between connections pays for waking up (BENCHMARKS.md). wrk and h2load
/// verify nothing; this keeps one real check and the server's work is unchanged: it still
/// signs every full handshake.
#[derive(Debug)]
struct CheckOnce {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    verified: std::sync::OnceLock<CertificateDer<'static>>,
}

impl CheckOnce {
    fn new(ca: &str) -> Arc<CheckOnce> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
            roots.add(cert.expect("CA certificate")).expect("CA");
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            client_provider(),
        )
        .build()
        .expect("verifier");
        Arc::new(CheckOnce {
            webpki,
            verified: std::sync::OnceLock::new(),
        })
    }

    fn seen(&self, cert: &CertificateDer<'_>) -> bool {
        self.verified
            .get()
            .is_some_and(|v| v.as_ref() == cert.as_ref())
    }
}

impl rustls::client::danger::ServerCertVerifier for CheckOnce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.seen(end_entity) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        if self.seen(cert) {
            return Ok(rustls::client::danger::HandshakeSignatureValid::assertion());
        }
        let valid = self.webpki.verify_tls13_signature(message, cert, dss)?;
        // Only a certificate whose chain and signature both checked out is remembered.
        let _ = self.verified.set(cert.clone().into_owned());
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn server_name(uri: &http::Uri) -> ServerName<'static> {
    ServerName::try_from(uri.host().expect("host").to_string()).expect("server name")
}

/// `newtls` and `resume`: a new connection per request, in `conns` loops, each with a client
/// (and so a session cache, when it is to `resume`) of its own.
async fn reconnect(
    (addr, uri): (SocketAddr, http::Uri),
    run: Duration,
    conns: usize,
    ca: &str,
    resume: bool,
) {
    let end = Instant::now() + run;
    let verifier = CheckOnce::new(ca);
    let mut loops = Vec::new();
    for _ in 0..conns {
        let (tls, name, uri) = (
            tls_client(&verifier, resume),
            server_name(&uri),
            uri.clone(),
        );
        loops.push(tokio::spawn(async move {
            let (mut done, mut resumed, mut errors) = (0u64, 0u64, 0u64);
            while Instant::now() < end {
                let once = async {
                    let tcp = TcpStream::connect(addr).await.ok()?;
                    tcp.set_nodelay(true).ok()?;
                    let stream = tls.connect(name.clone(), tcp).await.ok()?;
                    let kind = stream.get_ref().1.handshake_kind();
                    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
                    tokio::spawn(conn);
                    let mut req = get(&uri);
                    req.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    let resp = sender.send_request(req).await.ok()?;
                    let ok = resp.status().is_success();
                    // The whole answer: a TLS 1.3 ticket arrives before it, after the handshake.
                    resp.into_body().collect().await.ok()?;
                    ok.then_some(kind == Some(rustls::HandshakeKind::Resumed))
                };
                match once.await {
                    Some(was_resumed) => {
                        done += 1;
                        resumed += u64::from(was_resumed);
                    }
                    None => {
                        errors += 1;
                        // Not a tight loop against a proxy that refuses.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (done, resumed, errors)
        }));
    }
    let (mut done, mut resumed, mut errors) = (0, 0, 0);
    for task in loops {
        let (d, r, e) = task.await.expect("connection loop");
        (done, resumed, errors) = (done + d, resumed + r, errors + e);
    }
    println!("{done} {resumed} {errors}");
}

async fn hold((addr, uri): (SocketAddr, http::Uri), conns: usize, ca: &str) {
    let tls = tls_client(&CheckOnce::new(ca), true);
    let name = server_name(&uri);
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let mut opening = Vec::new();
    for _ in 0..conns {
        let (tls, name, uri, gate) = (tls.clone(), name.clone(), uri.clone(), gate.clone());
        opening.push(tokio::spawn(async move {
            let _turn = gate.acquire().await.expect("semaphore");
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let stream = tls.connect(name, tcp).await.expect("TLS handshake");
            let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP/1.1 handshake");
            tokio::spawn(conn);
            let resp = sender.send_request(get(&uri)).await.expect("request");
            assert!(resp.status().is_success(), "status {}", resp.status());
            resp.into_body().collect().await.expect("body");
            sender // kept: dropping it would close the connection
        }));
    }
    let mut held = Vec::with_capacity(conns);
    for task in opening {
        held.push(task.await.expect("connection"));
    }
    println!("ready {}", held.len());
    std::future::pending::<()>().await;
}
