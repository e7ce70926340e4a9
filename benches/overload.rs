//! Overload experiment: does shedding keep goodput and latency in shape past capacity?
//!
//! Two demo nodes, each with 4 workers serving `/work?ms=50` (like a Keycloak pod's thread
//! pool, queueing without bound for a worker): together they serve 2 × 4 / 50 ms = 160 req/s.
//! An open-loop generator offers 0.5x to 3x that (requests start on schedule whether or not
//! earlier ones finished, as real users do) through sessiongate twice: once without caps, once
//! with `max_in_flight_per_backend = 4` (matched to the workers), a queue of 8 and a 100 ms
//! queue timeout. It prints goodput, the latency of accepted requests and of 503s, and the 503
//! share. Loopback only, bounded in time (about a minute), stops by itself.
//!
//!     cargo bench --bench overload

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sessiongate::demo::DemoNode;
use sessiongate::{Config, Server};

const SERVICE_MS: u64 = 50;
const CAPACITY: f64 = 2.0 * 4.0 * 1000.0 / SERVICE_MS as f64;
const RUN: Duration = Duration::from_secs(4);
const LOADS: [f64; 6] = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0];

struct Sample {
    status: u16,
    latency: Duration,
    /// Since the step started: goodput counts over the time to the last answer, so a backlog
    /// that drains long after the offered load stopped does not look like throughput.
    done: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.1}", sorted[i].as_secs_f64() * 1000.0)
}

async fn proxy(nodes: &[DemoNode], shedding: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("sessiongate-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.addr)).collect();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess_log = false\nlevel = \"error\"\n\
         [timeouts]\nupstream_response = \"30s\"\n\
         [balance]\nalgorithm = \"least_requests\"\n\
         [[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\n\
         [[site]]\nname = \"main\"\nbackends = {{ static = [{}] }}\n{shedding}",
        list.join(", ")
    );
    let path = dir.join("overload.toml");
    std::fs::write(&path, text).unwrap();
    Server::start(Config::load(&path).unwrap()).await.unwrap()
}

/// Offers `rate` requests per second for `RUN`, open loop; returns every outcome.
async fn offer(addr: SocketAddr, rate: f64) -> Vec<Sample> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http();
    let uri: http::Uri = format!("http://{addr}/work?ms={SERVICE_MS}")
        .parse()
        .unwrap();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    while start.elapsed() < RUN {
        ticker.tick().await;
        let (client, uri) = (client.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let req = http::Request::get(uri).body(Empty::new()).unwrap();
            let status = match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    status
                }
                Err(e) => {
                    if std::env::var_os("OVERLOAD_DEBUG").is_some() {
                        eprintln!("client error: {e:?}");
                    }
                    0
                }
            };
            Sample {
                status,
                latency: began.elapsed(),
                done: start.elapsed(),
            }
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        // Bounded: an unshed backlog drains at capacity, so this ends too.
        if let Ok(Ok(sample)) = tokio::time::timeout(Duration::from_secs(60), t).await {
            samples.push(sample);
        }
    }
    samples
}

fn report(label: &str, load: f64, samples: &[Sample]) {
    let mut ok: Vec<Duration> = samples
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.latency)
        .collect();
    let mut shed: Vec<Duration> = samples
        .iter()
        .filter(|s| s.status == 503)
        .map(|s| s.latency)
        .collect();
    let other = samples.len() - ok.len() - shed.len();
    let span = samples
        .iter()
        .map(|s| s.done)
        .max()
        .unwrap_or(RUN)
        .max(RUN)
        .as_secs_f64();
    let goodput = ok.len() as f64 / span;
    ok.sort();
    shed.sort();
    println!(
        "| {label} | {load:.1}x | {:.0} | {:.0} | {} | {} | {} | {} | {:.0}% | {other} |",
        samples.len() as f64 / RUN.as_secs_f64(),
        goodput,
        percentile(&ok, 0.5),
        percentile(&ok, 0.99),
        percentile(&shed, 0.5),
        percentile(&shed, 0.99),
        100.0 * shed.len() as f64 / samples.len().max(1) as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut nodes = Vec::new();
    for i in 1..=2 {
        nodes.push(
            DemoNode::start(&format!("node-{i}"), SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap(),
        );
    }
    let configs = [
        ("no caps", String::new()),
        (
            "shedding",
            "[site.shedding]\nmax_in_flight_per_backend = 4\nqueue = 8\nqueue_timeout = \"100ms\"\n"
                .to_string(),
        ),
    ];
    println!(
        "capacity {CAPACITY:.0} req/s (2 nodes x 4 workers / {SERVICE_MS} ms); {}s per step, open loop\n",
        RUN.as_secs()
    );
    println!("| proxy | load | offered req/s | goodput req/s | 200 p50 ms | 200 p99 ms | 503 p50 ms | 503 p99 ms | 503 share | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (label, shedding) in &configs {
        let server = proxy(&nodes, shedding).await;
        let addr = server.listener_addr("plain").unwrap();
        for load in LOADS {
            let samples = offer(addr, CAPACITY * load).await;
            report(label, load, &samples);
            // Let any backlog drain before the next step.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let refused = String::from_utf8_lossy(&server.metrics().render())
            .lines()
            .find(|l| {
                l.starts_with("sessiongate_connection_errors_total") && l.contains("per_ip_limit")
            })
            .map(|l| l.rsplit(' ').next().unwrap_or("0").to_string())
            .unwrap_or_else(|| "0".into());
        notes.push(format!(
            "{label}: connections refused by max_connections_per_ip: {refused}"
        ));
        server.shutdown().await;
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}
