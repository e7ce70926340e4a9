use std::path::Path;

use super::*;

fn check(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", Path::new("/nonexistent"))
}

/// A config of one plain listener with `extra` keys, in front of one static backend.
fn listener(extra: &str) -> Result<Config, ConfigError> {
    check(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n{extra}\n[[site]]\nbackends = {{ static = [\"127.0.0.1:9000\"] }}\n"
    ))
}

const MINIMAL: &str = r#"
[[listener]]
listen = "127.0.0.1:8080"
[[site]]
backends = { static = ["127.0.0.1:9000"] }
"#;

fn keys(err: &ConfigError) -> Vec<&str> {
    err.issues.iter().map(|i| i.key.as_str()).collect()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = check(MINIMAL).unwrap();
    assert_eq!(c.admin.listen.to_string(), raw::DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.timeouts.idle, Duration::from_secs(60));
    assert_eq!(c.timeouts.upstream_connect, Duration::from_secs(5));
    assert_eq!(c.timeouts.shutdown_drain, Duration::from_secs(25));
    assert_eq!(c.timeouts.close_grace, Duration::from_secs(1));
    assert_eq!(c.timeouts.tunnel, Duration::from_secs(3600));
    assert_eq!(
        c.upstream.max_idle_per_backend,
        raw::DEFAULT_POOL_MAX_IDLE_PER_BACKEND
    );
    assert_eq!(c.listeners[0].name, "listener0");
    assert_eq!(c.sites[0].name, "site0");
    assert!(c.log.access_log);
    assert_eq!(c.limits.h2_stream_buffer, 64 << 10);
    assert!(c
        .to_effective_toml()
        .contains("h2_stream_buffer = \"65536\""));
}

#[test]
fn every_unknown_key_is_reported_with_its_path() {
    let err = check(
        r#"
typo = 1
[admin]
listen = "127.0.0.1:9901"
lisen = "x"
[[listener]]
listen = "127.0.0.1:8080"
[listener.tls]
certs = "x"
[[site]]
backends = { static = ["127.0.0.1:9000"], consul = "keycloak" }
"#,
    )
    .unwrap_err();
    let mut k = keys(&err);
    k.sort();
    assert_eq!(
        k,
        vec![
            "admin.lisen",
            "listener[0].tls.certs",
            "site[0].backends.consul",
            "typo"
        ]
    );
    assert!(err
        .to_string()
        .starts_with("invalid config test.toml: 4 problems"));
}

#[test]
fn type_errors_name_the_line() {
    let err = check("[[listener]]\nlisten = 8080\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("listen"), "{text}");
}

#[test]
fn impossible_values_are_all_reported() {
    let err = check(
        r#"
[log]
format = "xml"
[timeouts]
idle = "0s"
upstream_response = "soon"
close_grace = "0s"
tunnel = "forever"
shutdown_drain = "11y"
[limits]
h2_stream_buffer = "4KiB"
[[listener]]
name = "bad name"
listen = "localhost:80"
redirect_to_https = false
https_port = 8443
[[listener]]
listen = "127.0.0.1:9901"
[[site]]
backends = { static = [] }
[[site]]
backends = { static = ["a:1"] }
"#,
    )
    .unwrap_err();
    let k = keys(&err);
    for expected in [
        "log.format",
        "timeouts.idle",
        "timeouts.upstream_response",
        "timeouts.close_grace",
        "timeouts.tunnel",
        "timeouts.shutdown_drain",
        "limits.h2_stream_buffer",
        "listener[0].name",
        "listener[0].listen",
        "listener[0].https_port",
        "listener[1].listen",
        "site[0].backends.static",
    ] {
        assert!(k.contains(&expected), "{expected} missing from {k:?}");
    }
}

#[test]
fn empty_config_says_what_is_required() {
    let err = check("").unwrap_err();
    assert_eq!(keys(&err), vec!["listener", "site"]);
}

#[test]
fn backend_addresses_must_be_host_and_port() {
    let ok = [
        "10.0.0.1:8080",
        "[::1]:8080",
        "keycloak-0.keycloak-headless.svc:8443",
    ];
    let bad = [
        "10.0.0.1",
        "host:0",
        "host:http",
        ":80",
        "bad_host:80",
        "a..b:80",
    ];
    for entry in ok {
        assert!(validate::check_host_port(entry).is_ok(), "{entry}");
    }
    for entry in bad {
        assert!(validate::check_host_port(entry).is_err(), "{entry}");
    }
}

#[test]
fn redirect_needs_a_plain_listener() {
    let err = check(
        r#"
[[listener]]
listen = "127.0.0.1:8443"
redirect_to_https = true
tls = { cert = "a.crt", key = "a.key" }
[[site]]
backends = { static = ["127.0.0.1:9000"] }
"#,
    )
    .unwrap_err();
    let k = keys(&err);
    assert!(k.contains(&"listener[0].redirect_to_https"), "{k:?}");
    assert!(
        k.contains(&"listener[0].tls.cert"),
        "missing files are reported too: {k:?}"
    );
}

#[test]
fn the_example_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
        }
    }
}

#[test]
fn backend_sources_are_exactly_one_of_static_dns_srv() {
    let site = |backends: &str| {
        check(&format!(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[site]]\nbackends = {backends}\n"
        ))
    };
    let c = site(r#"{ dns = "keycloak-headless.kc.svc.cluster.local", port = 8080 }"#).unwrap();
    assert!(
        matches!(&c.sites[0].backends, BackendSource::Dns { name, port: 8080 } if name == "keycloak-headless.kc.svc.cluster.local")
    );
    let c = site(r#"{ srv = "_http._tcp.keycloak-headless.kc.svc.cluster.local" }"#).unwrap();
    assert!(matches!(&c.sites[0].backends, BackendSource::Srv { .. }));
    for (bad, key) in [
        (r#"{ dns = "kc.svc" }"#, "site[0].backends.port"),
        (
            r#"{ dns = "kc.svc", srv = "_x._tcp.kc", port = 1 }"#,
            "site[0].backends",
        ),
        (
            r#"{ srv = "_x._tcp.kc", port = 1 }"#,
            "site[0].backends.port",
        ),
        (r#"{ dns = "bad name!", port = 1 }"#, "site[0].backends.dns"),
        ("{}", "site[0].backends"),
    ] {
        let err = site(bad).unwrap_err();
        assert!(keys(&err).contains(&key), "{bad}: {err}");
    }
}

#[test]
fn dns_settings_are_checked() {
    let err = check(&format!(
        "{MINIMAL}[dns]\nnameservers = [\"10.96.0.10\", \"127.0.0.1:8600\", \"consul\"]\n\
         refresh_min = \"1m\"\nrefresh_max = \"10s\"\njitter = 0.9\nattempts = 0\nfamily = \"ipx\"\n"
    ))
    .unwrap_err();
    let mut k = keys(&err);
    k.sort();
    assert_eq!(
        k,
        vec![
            "dns.attempts",
            "dns.family",
            "dns.jitter",
            "dns.nameservers[2]",
            "dns.refresh_min"
        ]
    );
    let c = check(&format!(
        "{MINIMAL}[dns]\nnameservers = [\"10.96.0.10\", \"127.0.0.1:8600\"]\n"
    ))
    .unwrap();
    let ns = c.dns.nameservers.unwrap();
    assert_eq!(ns[0].to_string(), "10.96.0.10:53");
    assert_eq!(ns[1].to_string(), "127.0.0.1:8600");
}

#[test]
fn balance_settings_are_checked() {
    let ok =
        |extra: &str| check(&format!("{MINIMAL}[balance]\n{extra}")).map(|c| c.balance.algorithm);
    assert_eq!(
        ok("algorithm = \"least_requests\"").unwrap(),
        Algorithm::LeastRequests
    );
    assert_eq!(
        ok("algorithm = \"hash\"\nhash_key = \"header:X-Tenant\"").unwrap(),
        Algorithm::Hash(HashKey::Header(http::HeaderName::from_static("x-tenant")))
    );
    assert_eq!(
        ok("algorithm = \"hash\"\nhash_key = \"cookie:KC_RESTART\"").unwrap(),
        Algorithm::Hash(HashKey::Cookie("KC_RESTART".into()))
    );
    for (bad, key) in [
        ("algorithm = \"fastest\"", "balance.algorithm"),
        ("algorithm = \"hash\"", "balance.hash_key"),
        (
            "algorithm = \"hash\"\nhash_key = \"uri\"",
            "balance.hash_key",
        ),
        ("hash_key = \"source_ip\"", "balance.hash_key"),
    ] {
        let err = ok(bad).unwrap_err();
        assert!(keys(&err).contains(&key), "{bad}: {err}");
    }
}

#[test]
fn sticky_settings_are_checked_and_the_secret_never_printed() {
    let sticky = |extra: &str| check(&format!("{MINIMAL}[balance.sticky]\n{extra}"));
    let c = sticky("mode = \"cookie\"\nsecret = \"0123456789abcdef-secret\"").unwrap();
    assert!(matches!(
        &c.balance.sticky,
        Some(StickyMode::Cookie { name, .. }) if name == raw::DEFAULT_STICKY_COOKIE
    ));
    let effective = c.to_effective_toml();
    assert!(
        !effective.contains("0123456789abcdef-secret"),
        "{effective}"
    );

    let c = sticky("mode = \"route\"\nroutes = { node-a = \"10.0.0.1:8080\" }").unwrap();
    assert!(matches!(
        &c.balance.sticky,
        Some(StickyMode::Route { cookie, learn: true, .. }) if cookie == "AUTH_SESSION_ID"
    ));
    assert_eq!(
        sticky("mode = \"source_ip\"").unwrap().balance.sticky,
        Some(StickyMode::SourceIp)
    );
    for (bad, key) in [
        ("", "balance.sticky.mode"),
        ("mode = \"ip_hash\"", "balance.sticky.mode"),
        ("mode = \"cookie\"", "balance.sticky.secret"),
        (
            "mode = \"cookie\"\nsecret = \"short\"",
            "balance.sticky.secret",
        ),
        (
            "mode = \"cookie\"\nsecret_file = \"missing.key\"",
            "balance.sticky.secret_file",
        ),
        (
            "mode = \"cookie\"\nsecret = \"0123456789abcdef\"\ncookie = \"a b\"",
            "balance.sticky.cookie",
        ),
        (
            "mode = \"source_ip\"\nsecret = \"x\"",
            "balance.sticky.secret",
        ),
        (
            "mode = \"cookie\"\nsecret = \"0123456789abcdef\"\nroute_cookie = \"A\"",
            "balance.sticky.route_cookie",
        ),
        (
            "mode = \"route\"\nroutes = { a = \"no-port\" }",
            "balance.sticky.routes.a",
        ),
    ] {
        let err = sticky(bad).unwrap_err();
        assert!(keys(&err).contains(&key), "{bad}: {err}");
    }
}

#[test]
fn health_and_outlier_settings_are_checked() {
    let site = |extra: &str| check(&format!("{MINIMAL}{extra}"));
    let c = site("[site.health]\npath = \"/health/ready\"\nport = 9000\nexpect_json_up = true\n")
        .unwrap();
    let h = c.sites[0].health.as_ref().unwrap();
    assert_eq!((h.rise, h.fall, h.expect_status), (2, 3, (200, 399)));
    assert_eq!(h.port, Some(9000));
    assert_eq!(c.sites[0].outlier.consecutive_failures, 5);
    assert_eq!(c.upstream.retries, 2);
    for (bad, key) in [
        ("[site.health]\npath = \"health\"", "site[0].health.path"),
        ("[site.health]\nrise = 0", "site[0].health.rise"),
        (
            "[site.health]\nexpect_status = \"2xx\"",
            "site[0].health.expect_status",
        ),
        (
            "[site.health]\nexpect_status = \"399-200\"",
            "site[0].health.expect_status",
        ),
        (
            "[site.health]\ninterval = \"1s\"\ntimeout = \"2s\"",
            "site[0].health.timeout",
        ),
        (
            "[site.outlier]\nbase_ejection = \"1m\"\nmax_ejection = \"10s\"",
            "site[0].outlier.max_ejection",
        ),
    ] {
        let err = site(bad).unwrap_err();
        assert!(keys(&err).contains(&key), "{bad}: {err}");
    }
}

#[test]
fn several_sites_and_failover_settings_are_checked() {
    let two = format!(
        "{MINIMAL}[[site]]\nname = \"b\"\nbackends = {{ static = [\"127.0.0.1:9001\"] }}\n\
         [site.lb_check]\nurl = \"http://127.0.0.1:9001/lb-check\"\nfall = 2\n"
    );
    let c = check(&two).unwrap();
    assert_eq!(c.sites.len(), 2);
    assert_eq!(c.sites[1].probe.as_ref().unwrap().fall, 2);
    assert_eq!(c.failover.auto_failback, None, "manual by default");
    assert_eq!(c.failover.lb_check_path.as_deref(), Some("/lb-check"));
    let auto = check(&format!(
        "{two}[failover]\nfailback = \"auto\"\nfailback_hold = \"1m\"\n"
    ))
    .unwrap();
    assert_eq!(auto.failover.auto_failback, Some(Duration::from_secs(60)));
    assert!(check(&format!("{two}[failover]\nlb_check_path = \"\"\n"))
        .unwrap()
        .failover
        .lb_check_path
        .is_none());

    for (bad, key) in [
        (
            format!("{MINIMAL}[[site]]\nname = \"site0\"\nbackends = {{ static = [\"a:1\"] }}\n"),
            "site[1].name",
        ),
        (
            format!("{MINIMAL}[failover]\nfailback = \"sometimes\"\n"),
            "failover.failback",
        ),
        (
            format!("{MINIMAL}[failover]\nfailback_hold = \"1m\"\n"),
            "failover.failback_hold",
        ),
        (
            format!("{MINIMAL}[site.lb_check]\nurl = \"ftp://x/\"\n"),
            "site[0].lb_check.url",
        ),
        (
            format!("{MINIMAL}[site.lb_check]\nfall = 0\n"),
            "site[0].lb_check.fall",
        ),
        (
            format!("{MINIMAL}[admin]\ntoken = \"short\"\n"),
            "admin.token",
        ),
    ] {
        let err = check(&bad).unwrap_err();
        assert!(keys(&err).contains(&key), "{bad}: {err}");
    }
    let token = check(&format!(
        "{MINIMAL}[admin]\ntoken = \"0123456789abcdef0123\"\n"
    ))
    .unwrap();
    assert!(!token.to_effective_toml().contains("0123456789abcdef0123"));
}

#[test]
fn proxy_protocol_needs_its_trusted_networks() {
    let c =
        listener("proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.1\"]")
            .unwrap();
    assert_eq!(
        c.listeners[0].proxy_protocol.as_ref().map(Vec::len),
        Some(2)
    );
    for (bad, key) in [
        ("proxy_protocol = true", "listener[0].proxy_protocol_from"),
        (
            "proxy_protocol_from = [\"10.0.0.0/8\"]",
            "listener[0].proxy_protocol_from",
        ),
        (
            "proxy_protocol = true\nproxy_protocol_from = [\"nowhere\"]",
            "listener[0].proxy_protocol_from[0]",
        ),
    ] {
        let err = listener(bad).unwrap_err();
        assert!(keys(&err).contains(&key), "{bad}: {err}");
    }
}

#[test]
fn forwarded_for_is_chain_or_client() {
    let chain = listener("").unwrap();
    assert_eq!(chain.listeners[0].forwarded_for, ForwardedMode::Chain);
    assert!(chain
        .to_effective_toml()
        .contains("forwarded_for = \"chain\""));
    let client = listener("forwarded_for = \"client\"").unwrap();
    assert_eq!(client.listeners[0].forwarded_for, ForwardedMode::Client);
    assert!(client
        .to_effective_toml()
        .contains("forwarded_for = \"client\""));
    let err = listener("forwarded_for = \"last\"").unwrap_err();
    assert!(keys(&err).contains(&"listener[0].forwarded_for"), "{err}");
    assert!(err.to_string().contains("chain, client"), "{err}");
}

#[test]
fn a_request_id_header_must_be_a_name_of_its_own() {
    let c = listener("request_id_header = \"X-Request-ID\"").unwrap();
    assert_eq!(
        c.listeners[0].request_id.as_ref().map(|h| h.as_str()),
        Some("x-request-id")
    );
    assert!(c
        .to_effective_toml()
        .contains("request_id_header = \"x-request-id\""));
    assert!(listener("").unwrap().listeners[0].request_id.is_none());
    for bad in [
        "Host",
        "Connection",
        "X-Forwarded-For",
        "x_real_ip",
        "Set-Cookie",
        "a b",
        "",
    ] {
        let err = listener(&format!("request_id_header = \"{bad}\"")).unwrap_err();
        assert!(
            keys(&err).contains(&"listener[0].request_id_header"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn upgrades_are_websocket_unless_listed_and_never_h2c() {
    assert_eq!(listener("").unwrap().listeners[0].upgrades, ["websocket"]);
    let c = listener("upgrades = [\"WebSocket\", \"x-stream\"]").unwrap();
    assert_eq!(c.listeners[0].upgrades, ["websocket", "x-stream"]);
    let effective = c.to_effective_toml();
    assert!(
        effective.contains("upgrades = [\n    \"websocket\",\n    \"x-stream\",\n]"),
        "{effective}"
    );
    assert!(listener("upgrades = []").unwrap().listeners[0]
        .upgrades
        .is_empty());
    for (bad, why) in [
        ("H2C", "h2c cannot be allowed"),
        ("web socket", "not a protocol"),
    ] {
        let err = listener(&format!("upgrades = [\"websocket\", \"{bad}\"]")).unwrap_err();
        assert!(
            keys(&err).contains(&"listener[0].upgrades[1]"),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
}

#[test]
fn slow_start_is_a_positive_duration_and_not_for_hashing() {
    let balance = |extra: &str| check(&format!("{MINIMAL}[balance]\n{extra}\n"));
    let c = balance("slow_start = \"90s\"").unwrap();
    assert_eq!(c.balance.slow_start, Some(Duration::from_secs(90)));
    assert!(c.to_effective_toml().contains("slow_start = \"1m 30s\""));
    assert_eq!(balance("").unwrap().balance.slow_start, None);
    for bad in [
        "slow_start = \"0s\"",
        "slow_start = \"soon\"",
        "algorithm = \"hash\"\nhash_key = \"source_ip\"\nslow_start = \"1m\"",
    ] {
        let err = balance(bad).unwrap_err();
        assert!(keys(&err).contains(&"balance.slow_start"), "{bad}: {err}");
    }
}

#[test]
fn rate_limits_are_checked_and_their_paths_repeated_under_the_relative_path() {
    let c = check(
        r#"
[[listener]]
listen = "127.0.0.1:8080"
relative_path = "/auth"
[[listener.rate_limit]]
paths = ["/realms/master/protocol/"]
rate = "10/s"
[[listener.rate_limit]]
rate = "600/m"
burst = 50
max_clients = 1000
[[site]]
backends = { static = ["127.0.0.1:9000"] }
"#,
    )
    .unwrap();
    let rules = &c.listeners[0].rate_limits;
    assert_eq!(rules.len(), 2);
    assert_eq!((rules[0].burst, rules[0].max_clients), (10, 100_000));
    assert!(rules[0]
        .paths
        .iter()
        .any(|p| p.as_str() == "/auth/realms/master/protocol/"));
    assert_eq!(rules[1].paths_text, ["/"]);
    assert_eq!((rules[1].rate.text(), rules[1].burst), ("600/m".into(), 50));

    let err = check(
        r#"
[[listener]]
listen = "127.0.0.1:8080"
[[listener.rate_limit]]
paths = []
[[listener.rate_limit]]
rate = "10/day"
burst = 0
max_clients = 0
[[listener.rate_limit]]
paths = ["/a/%2f/b"]
rate = "1/s"
[[site]]
backends = { static = ["127.0.0.1:9000"] }
"#,
    )
    .unwrap_err();
    let mut k = keys(&err);
    k.sort();
    assert_eq!(
        k,
        [
            "listener[0].rate_limit[0].paths",
            "listener[0].rate_limit[0].rate",
            "listener[0].rate_limit[1].burst",
            "listener[0].rate_limit[1].max_clients",
            "listener[0].rate_limit[1].rate",
            "listener[0].rate_limit[2].paths[0]",
        ]
    );
}

#[test]
fn client_certificate_settings_are_checked() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let load = |tls: &str| {
        Config::from_toml(
            &format!(
                "[[listener]]\nlisten = \"127.0.0.1:8443\"\n[listener.tls]\n\
                 cert = \"../certs/tls.crt\"\nkey = \"../certs/tls.key\"\n{tls}\n\
                 [[site]]\nbackends = {{ static = [\"127.0.0.1:9000\"] }}\n"
            ),
            "test.toml",
            &base,
        )
    };
    let c = load("client_ca = \"../certs/dev-ca.crt\"").unwrap();
    let l = &c.listeners[0];
    assert_eq!(
        l.client_cert_header,
        Some((
            http::HeaderName::from_static("ssl-client-cert"),
            crate::tls::ClientCertFormat::Nginx
        ))
    );
    let c = load("client_ca = \"../certs/dev-ca.crt\"\nclient_cert_format = \"rfc9440\"").unwrap();
    assert_eq!(
        c.listeners[0].client_cert_header,
        Some((
            http::HeaderName::from_static("client-cert"),
            crate::tls::ClientCertFormat::Rfc9440
        ))
    );
    assert!(!l.tls.as_ref().unwrap().client_certs().unwrap().required);
    let c = load("client_ca = \"../certs/dev-ca.crt\"\nclient_auth = \"required\"").unwrap();
    assert!(
        c.listeners[0]
            .tls
            .as_ref()
            .unwrap()
            .client_certs()
            .unwrap()
            .required
    );

    for (tls, key) in [
        ("client_auth = \"required\"", "listener[0].tls.client_auth"),
        (
            "client_cert_header = \"x-cert\"",
            "listener[0].tls.client_cert_header",
        ),
        (
            "client_ca = \"../certs/dev-ca.crt\"\nclient_auth = \"maybe\"",
            "listener[0].tls.client_auth",
        ),
        (
            "client_ca = \"../certs/dev-ca.crt\"\nclient_cert_header = \"cookie\"",
            "listener[0].tls.client_cert_header",
        ),
        (
            "client_cert_format = \"rfc9440\"",
            "listener[0].tls.client_cert_format",
        ),
        (
            "client_ca = \"../certs/dev-ca.crt\"\nclient_cert_format = \"xfcc\"",
            "listener[0].tls.client_cert_format",
        ),
        ("client_ca = \"missing.crt\"", "listener[0].tls.client_ca"),
        (
            "client_ca = \"../certs/tls.key\"",
            "listener[0].tls.client_ca",
        ),
    ] {
        let err = load(tls).unwrap_err();
        assert_eq!(keys(&err), [key], "{tls}");
    }
}

#[test]
fn ticket_key_files_are_read_and_checked() {
    let dir = std::env::temp_dir().join(format!("sg-ticket-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let load = |file: &str| {
        Config::from_toml(
            &format!(
                "[[listener]]\nlisten = \"127.0.0.1:8443\"\n[listener.tls]\n\
                 cert = \"{certs}/tls.crt\"\nkey = \"{certs}/tls.key\"\n\
                 ticket_keys = \"{file}\"\n\
                 [[site]]\nbackends = {{ static = [\"127.0.0.1:9000\"] }}\n",
                certs = certs.display()
            ),
            "test.toml",
            &dir,
        )
    };
    // Two keys, relative to the config's directory; shown in the running config, watched.
    std::fs::write(dir.join("two.keys"), (0..160u8).collect::<Vec<u8>>()).unwrap();
    let c = load("two.keys").unwrap();
    let path = dir.join("two.keys");
    let info = c.listeners[0].tls.as_ref().unwrap().ticket_keys().unwrap();
    assert_eq!((&info.path, info.keys), (&path, 2));
    let shown = c.to_effective_toml();
    assert!(
        shown.contains(&format!("ticket_keys = \"{}\"", path.display())),
        "{shown}"
    );
    assert!(
        shown.contains("sealed with key 00010203..., the first of 2 in"),
        "{shown}"
    );
    assert!(crate::reload::watched_files(&c).contains(&path));

    // nginx's older 48-byte key, and a file that is not there: the key and the file named.
    std::fs::write(dir.join("short.keys"), [7u8; 48]).unwrap();
    for (file, says) in [
        ("short.keys", "holds 48 bytes"),
        ("missing.keys", "cannot read ticket key file"),
    ] {
        let err = load(file).unwrap_err();
        assert_eq!(keys(&err), ["listener[0].tls.ticket_keys"], "{file}");
        let shown = err.to_string();
        assert!(
            shown.contains(says) && shown.contains(&dir.join(file).display().to_string()),
            "{shown}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restrictions_are_checked_and_their_paths_repeated_under_the_relative_path() {
    let c = check(
        r#"
[[listener]]
listen = "127.0.0.1:8080"
relative_path = "/auth"
[[listener.restrict]]
paths = ["/admin/"]
allow_from = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
[[listener.restrict]]
allow_from = ["10.0.0.0/8"]
status = 404
[[site]]
backends = { static = ["127.0.0.1:9000"] }
"#,
    )
    .unwrap();
    let rules = &c.listeners[0].restrictions;
    assert_eq!(rules.len(), 2);
    assert!(rules[0].paths.iter().any(|p| p.as_str() == "/auth/admin/"));
    assert_eq!(rules[0].allow_from[1].to_string(), "192.0.2.7/32");
    assert_eq!(rules[0].status, http::StatusCode::FORBIDDEN);
    assert_eq!(rules[1].paths_text, ["/"]);
    assert_eq!(rules[1].status, http::StatusCode::NOT_FOUND);
    let shown = c.to_effective_toml();
    assert!(shown.contains("[[listener.restrict]]"), "{shown}");
    assert!(
        shown.contains("allow_from = [\n    \"10.0.0.0/8\","),
        "{shown}"
    );

    let err = check(
        r#"
[[listener]]
listen = "127.0.0.1:8080"
[[listener.restrict]]
paths = ["/admin/"]
[[listener.restrict]]
paths = ["/admin/"]
allow_from = []
[[listener.restrict]]
paths = ["/a/%2f/b"]
allow_from = ["10.0.0.0/33", "intranet"]
status = 500
[[site]]
backends = { static = ["127.0.0.1:9000"] }
"#,
    )
    .unwrap_err();
    assert_eq!(
        keys(&err),
        [
            "listener[0].restrict[0].allow_from",
            "listener[0].restrict[1].allow_from",
            "listener[0].restrict[2].paths[0]",
            "listener[0].restrict[2].allow_from[0]",
            "listener[0].restrict[2].allow_from[1]",
            "listener[0].restrict[2].status",
        ]
    );
}

#[test]
fn error_pages_are_read_relative_to_the_config_and_checked() {
    let dir = std::env::temp_dir().join(format!("sg-error-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("busy.html"), "<h1>busy</h1>").unwrap();
    std::fs::write(dir.join("page.php"), "x").unwrap();
    let load = |table: &str| {
        Config::from_toml(
            &format!("{MINIMAL}[error_pages]\n{table}\n"),
            "test.toml",
            &dir,
        )
    };
    let c = load("503 = \"busy.html\"\n504 = \"busy.html\"").unwrap();
    let path = dir.join("busy.html");
    let pages: Vec<_> = c.error_pages.iter().map(|p| p.status.as_u16()).collect();
    assert_eq!(pages, [503, 504]);
    assert!(crate::reload::watched_files(&c).contains(&path));
    let shown = c.to_effective_toml();
    assert!(
        shown.contains(&format!("503 = \"{}\"", path.display())),
        "{shown}"
    );
    assert!(!check(MINIMAL)
        .unwrap()
        .to_effective_toml()
        .contains("error_pages"));

    for (table, key, says) in [
        (
            "five = \"busy.html\"",
            "error_pages.five",
            "`five` is not a status code",
        ),
        (
            "302 = \"busy.html\"",
            "error_pages.302",
            "pages are for 400 to 599",
        ),
        ("503 = \"missing.html\"", "error_pages.503", "missing.html"),
        (
            "503 = \"page.php\"",
            "error_pages.503",
            ".html, .htm, .json, .txt",
        ),
        (
            "503 = \"busy.html\"\n\"0503\" = \"busy.html\"",
            // Keys are taken in order: "0503" comes first.
            "error_pages.503",
            "a second page for 503",
        ),
    ] {
        let err = load(table).unwrap_err();
        assert_eq!(keys(&err), [key], "{table}");
        assert!(err.to_string().contains(says), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
