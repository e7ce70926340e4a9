//! One health probe: a GET to the backend's check path on a connection of its own (probes never
//! queue behind requests, nor find a kept-alive connection the backend gave up on), judged by
//! status and, optionally, a JSON `status` of `UP`.

use std::time::Duration;

use http::Uri;

use crate::backends::Backend;
use crate::config::HealthCheck;
use crate::tls::UpstreamTls;
use crate::upstream::{probe_get, Connector};

/// Health bodies are small; a larger one is read this far and judged on that.
const MAX_BODY: usize = 64 * 1024;

pub struct Prober {
    connector: Connector,
    scheme: &'static str,
    check: HealthCheck,
}

impl Prober {
    pub fn new(tls: Option<UpstreamTls>, check: HealthCheck) -> Prober {
        let scheme = if tls.is_some() { "https" } else { "http" };
        Prober {
            connector: Connector::new(tls, check.timeout),
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
            let authority = uri.authority().ok_or("no authority in the check URI")?;
            let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
            let (status, body) = probe_get(&self.connector, authority, target, MAX_BODY)
                .await
                .map_err(|e| e.to_string())?;
            let status = status.as_u16();
            let (lo, hi) = self.check.expect_status;
            if !(lo..=hi).contains(&status) {
                return Err(format!("status {status}"));
            }
            if self.check.expect_json_up {
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
