//! One health probe: a GET to the backend's check path on its own connection pool (probes
//! never queue behind requests), judged by status and, optionally, a JSON `status` of `UP`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::backends::Backend;
use crate::config::HealthCheck;
use crate::tls::UpstreamTls;
use crate::upstream::Connector;

/// Health bodies are small; a larger one is read this far and judged on that.
const MAX_BODY: usize = 64 * 1024;

pub struct Prober {
    client: Client<Connector, Empty<Bytes>>,
    scheme: &'static str,
    check: HealthCheck,
}

impl Prober {
    pub fn new(tls: Option<UpstreamTls>, check: HealthCheck) -> Prober {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(check.interval * 2)
            .pool_max_idle_per_host(1)
            .build(Connector::new(tls, check.timeout));
        Prober {
            client,
            scheme,
            check,
        }
    }

    /// Ok when the backend passes; Err says why not (for the log).
    pub async fn probe(&self, backend: &Backend) -> Result<(), String> {
        self.probe_uri(self.uri(backend)?).await
    }

    /// Probes any URI with this prober's expectations.
    pub async fn probe_uri(&self, uri: Uri) -> Result<(), String> {
        let exchange = async {
            let req = Request::get(uri)
                .header(http::header::USER_AGENT, "sessiongate-health-check")
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let resp = self.client.request(req).await.map_err(|e| {
                let mut text = e.to_string();
                if let Some(s) = std::error::Error::source(&e) {
                    text.push_str(&format!(": {s}"));
                }
                text
            })?;
            let status = resp.status().as_u16();
            let (lo, hi) = self.check.expect_status;
            if !(lo..=hi).contains(&status) {
                return Err(format!("status {status}"));
            }
            if self.check.expect_json_up {
                let body = Limited::new(resp.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the body: {e}"))?
                    .to_bytes();
                json_status_up(&body)?;
            }
            Ok(())
        };
        match tokio::time::timeout(self.check.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.check.timeout)),
        }
    }

    fn uri(&self, backend: &Backend) -> Result<Uri, String> {
        let authority = match self.check.port {
            Some(port) => format!("{}:{port}", backend.authority.host()),
            None => backend.authority.to_string(),
        };
        format!("{}://{authority}{}", self.scheme, self.check.path)
            .parse()
            .map_err(|e| format!("bad check URI: {e}"))
    }
}

/// Keycloak's `/health/ready`: `{"status": "UP", "checks": [...]}`.
fn json_status_up(body: &[u8]) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match value.get("status").and_then(|s| s.as_str()) {
        Some("UP") => Ok(()),
        Some(other) => Err(format!("status is {other}")),
        None => Err("no status in the body".into()),
    }
}

/// The probe interval with ±10% jitter, so replicas (and sites) do not probe in lockstep.
pub fn jittered(interval: Duration) -> Duration {
    let r = (crate::balance::random_u64() % 2001) as f64 / 1000.0 - 1.0;
    interval.mul_f64(1.0 + 0.1 * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keycloak_health_bodies() {
        assert!(json_status_up(br#"{"status": "UP", "checks": []}"#).is_ok());
        assert_eq!(
            json_status_up(br#"{"status": "DOWN"}"#),
            Err("status is DOWN".into())
        );
        assert!(json_status_up(b"UP").is_err());
        assert!(json_status_up(br#"{"checks": []}"#).is_err());
    }
}
