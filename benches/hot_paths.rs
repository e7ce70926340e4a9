//! Micro-benchmarks of the request path's pure parts: backend selection (each algorithm and a
//! sticky hit), the sticky cookie (verify, encode, and read and strip from a browser's cookies),
//! path canonicalisation and policy, the header rewrite every request gets, and a rate limit's
//! check (a client within its allowance, among 10,000 tracked), and a TLS session ticket sealed
//! and opened.
//! `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderValue};
use sessiongate::backends::{initial, Site};
use sessiongate::config::StickyMode;
use sessiongate::sticky::{SessionKey, Sticky};
use sessiongate::{paths, Config, Metrics};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A site of ten static backends, configured as an operator would write it.
fn site(balance: &str) -> (Arc<Site>, Config) {
    let backends: Vec<String> = (1..=10).map(|i| format!("\"10.0.0.{i}:8080\"")).collect();
    let text = format!(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n{balance}\n\
         [[site]]\nname = \"kc\"\nbackends = {{ static = [{}] }}\n",
        backends.join(", ")
    );
    let config = Config::from_toml(&text, "bench.toml", Path::new(".")).unwrap();
    let snapshot = initial(&config, &Metrics::new());
    (snapshot.sites[0].clone(), config)
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for (name, balance) in [
        ("round_robin", "[balance]\nalgorithm = \"round_robin\"\n"),
        (
            "least_requests",
            "[balance]\nalgorithm = \"least_requests\"\n",
        ),
        (
            "hash",
            "[balance]\nalgorithm = \"hash\"\nhash_key = \"header:x-tenant\"\n",
        ),
    ] {
        let (site, config) = site(balance);
        let key: Option<&[u8]> = Some(b"tenant-42");
        group.bench_function(name, |b| {
            b.iter(|| {
                site.select(&config.balance, &SessionKey::Unpinned, black_box(key), &[])
                    .ok()
            })
        });
    }
    let sticky = format!("[balance]\nalgorithm = \"least_requests\"\n[balance.sticky]\nmode = \"cookie\"\nsecret = \"{SECRET}\"\n");
    let (site, config) = site(&sticky);
    let tag = site.backends[3].tag;
    let session = SessionKey::Cookie { nonce: 7, tag };
    group.bench_function("sticky_hit", |b| {
        b.iter(|| {
            site.select(&config.balance, black_box(&session), None, &[])
                .ok()
        })
    });
    group.finish();
}

fn sticky_cookie(c: &mut Criterion) {
    let sticky = Sticky::new(
        &StickyMode::Cookie {
            name: "SG_NODE".into(),
            secret: SECRET.as_bytes().to_vec(),
            secret_file: None,
        },
        0,
    );
    let tag = sticky.tag("10.0.0.4:8080");
    // `SG_NODE=<value>` as a browser sends it back.
    let cookie = |nonce: u64| {
        let set = sticky.set_cookie(nonce, tag, true).unwrap();
        set.to_str().unwrap().split(';').next().unwrap().to_string()
    };
    let value = cookie(7);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!(
            "KEYCLOAK_IDENTITY=abc; {value}; AUTH_SESSION_ID=x.kc-0"
        ))
        .unwrap(),
    );
    let peer: IpAddr = [203, 0, 113, 7].into();
    // A cookie this thread has verified before: every request of a session after its first.
    c.bench_function("sticky/verify", |b| {
        b.iter(|| sticky.read(black_box(&headers), peer))
    });
    // A cookie seen for the first time, so its MAC is checked: each iteration's nonce is new.
    let mut nonce = 1u64 << 32;
    c.bench_function("sticky/verify_first", |b| {
        b.iter_batched_ref(
            || {
                nonce += 1;
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::COOKIE,
                    HeaderValue::from_str(&cookie(nonce)).unwrap(),
                );
                headers
            },
            |headers| sticky.read(headers, peer),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("sticky/encode", |b| {
        b.iter(|| sticky.set_cookie(black_box(7), black_box(tag), true))
    });

    // What a sticky request costs in cookies: read and verify the proxy's cookie, then take it
    // out of what the backend gets, from a line shaped like a logged-in Keycloak browser's (its
    // identity cookie is a signed token of several hundred bytes).
    let identity = format!("eyJhbGciOiJIUzUxMiJ9.{}.sig", "x".repeat(600));
    let mut browser = HeaderMap::new();
    browser.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!(
            "AUTH_SESSION_ID=3f1c6a4e-9b2d-4c7a-8e51-0d9f6b2a7c44.keycloak-0; \
             KC_AUTH_SESSION_HASH=Vt3kqSx2YH0mS2T8pHqQkQ; KEYCLOAK_IDENTITY={identity}; \
             KEYCLOAK_SESSION=acme/8a7d2c1e-5f3b-4e6a-9c0d-1b2e3f4a5b6c; {value}"
        ))
        .unwrap(),
    );
    c.bench_function("sticky/read_and_strip", |b| {
        b.iter_batched_ref(
            || browser.clone(),
            |headers| {
                let session = sticky.read(headers, peer);
                sessiongate::cookies::remove(headers, "SG_NODE");
                session
            },
            BatchSize::SmallInput,
        )
    });
}

fn path_policy(c: &mut Criterion) {
    let config = Config::from_toml(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\nrelative_path = \"/auth\"\n\
         [[site]]\nbackends = { static = [\"10.0.0.1:8080\"] }\n",
        "bench.toml",
        Path::new("."),
    )
    .unwrap();
    let policy = &config.listeners[0].paths;
    for (name, path) in [
        ("plain", "/auth/realms/acme/protocol/openid-connect/auth"),
        ("escaped", "/auth/realms/acme/%2e%2e/%6detrics;x=1"),
    ] {
        c.bench_function(&format!("paths/{name}"), |b| {
            b.iter(|| {
                let canonical = paths::canonicalize(black_box(path)).unwrap();
                policy.denies(&canonical)
            })
        });
    }
}

fn header_rewrite(c: &mut Criterion) {
    let mut request = HeaderMap::new();
    for (k, v) in [
        ("host", "sso.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "KEYCLOAK_IDENTITY=abc; AUTH_SESSION_ID=x.kc-0"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "198.51.100.1"),
    ] {
        request.insert(k, HeaderValue::from_static(v));
    }
    let host = HeaderValue::from_static("sso.example.com");
    // Made when the connection opens, not per request.
    let hop = sessiongate::headers::Hop::new([203, 0, 113, 7].into(), "https", 443);
    c.bench_function("headers/rewrite", |b| {
        b.iter(|| {
            let mut headers = request.clone();
            sessiongate::headers::strip_hop_by_hop(&mut headers, false);
            sessiongate::headers::set_forwarded(
                &mut headers,
                &sessiongate::headers::ForwardedFor {
                    hop: &hop,
                    host: &host,
                    trusted: false,
                    resolved: None,
                },
            );
            headers
        })
    });
}

fn rate_limit(c: &mut Criterion) {
    let config = Config::from_toml(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n\
         [[listener.rate_limit]]\npaths = [\"/realms/acme/login-actions/\"]\nrate = \"1/s\"\n\
         [[listener.rate_limit]]\nrate = \"1000000/s\"\n\
         [[site]]\nbackends = { static = [\"10.0.0.1:8080\"] }\n",
        "bench.toml",
        Path::new("."),
    )
    .unwrap();
    let counter = || prometheus::IntCounter::new("c", "c").unwrap();
    let rules: Vec<_> = config.listeners[0]
        .rate_limits
        .iter()
        .map(|r| {
            Arc::new(sessiongate::rate_limit::RateLimiter::new(
                r.clone(),
                counter(),
                counter(),
            ))
        })
        .collect();
    // 10,000 clients known; the one measured stays within its allowance (the second rule).
    for n in 0..10_000u32 {
        let client = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
        let _ = sessiongate::rate_limit::check(&rules, "/realms/acme/account", client);
    }
    let client: IpAddr = [10, 0, 0, 7].into();
    c.bench_function("rate_limit/check", |b| {
        b.iter(|| sessiongate::rate_limit::check(&rules, black_box("/realms/acme/account"), client))
    });
}

/// A TLS session ticket sealed and opened (one of each per resumed connection): with a key
/// file shared by replicas (`ticket_keys`) and with rustls' own random key, the default.
fn session_tickets(c: &mut Criterion) {
    let file = std::env::temp_dir().join(format!("sg-bench-ticket-{}", std::process::id()));
    std::fs::write(&file, (0..160u8).collect::<Vec<u8>>()).unwrap();
    let from_file: Arc<dyn rustls::server::ProducesTickets> =
        Arc::new(sessiongate::ticket_keys::TicketKeys::load(&file).unwrap());
    std::fs::remove_file(&file).unwrap();
    let random = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
    // About what rustls seals for a TLS 1.3 session without a client certificate.
    let session = [0x5a; 128];
    for (name, ticketer) in [("file_keys", from_file), ("rustls_random", random)] {
        c.bench_function(&format!("tickets/{name}"), |b| {
            b.iter(|| {
                let ticket = ticketer.encrypt(black_box(&session)).unwrap();
                ticketer.decrypt(&ticket).unwrap()
            })
        });
    }
}

criterion_group!(
    benches,
    selection,
    sticky_cookie,
    path_policy,
    header_rewrite,
    rate_limit,
    session_tickets
);
criterion_main!(benches);
