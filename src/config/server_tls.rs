//! Validation of a listener's `tls` table: its certificates, and the client certificates it
//! asks for and passes on (Keycloak's X.509 login).

use super::raw;
use super::resolve_path;
use super::validate::Checker;
use crate::ticket_keys::TicketKeys;
use crate::tls::{self, CertificateSet};

pub(super) fn server_tls(
    c: &mut Checker<'_>,
    key: &str,
    t: &raw::RawServerTls,
) -> Option<CertificateSet> {
    let mut pairs = Vec::new();
    let mut pair =
        |c: &mut Checker<'_>, key: &str, cert: &Option<String>, keyf: &Option<String>| {
            let cert = c.required(&format!("{key}.cert"), cert).map(str::to_owned);
            let keyp = c.required(&format!("{key}.key"), keyf).map(str::to_owned);
            if let (Some(cert), Some(keyp)) = (cert, keyp) {
                let (cert_path, key_path) =
                    (resolve_path(c.base, &cert), resolve_path(c.base, &keyp));
                match tls::load_certificate(&cert_path, &key_path) {
                    Ok(loaded) => pairs.push(loaded),
                    Err(e) => c.issue(format!("{key}.cert"), e.to_string()),
                }
            }
        };
    pair(c, key, &t.cert, &t.key);
    for (j, p) in t.sni.iter().enumerate() {
        pair(c, &format!("{key}.sni[{j}]"), &p.cert, &p.key);
    }
    let client_certs = client_certs(c, key, t);
    let ticket_keys = t.ticket_keys.as_ref().and_then(|path| {
        TicketKeys::load(&resolve_path(c.base, path))
            .map_err(|e| c.issue(format!("{key}.ticket_keys"), e.to_string()))
            .ok()
    });
    if pairs.is_empty() {
        return None;
    }
    match CertificateSet::new(pairs, client_certs, ticket_keys) {
        Ok(set) => Some(set),
        Err(e) => {
            c.issue(key, e.to_string());
            None
        }
    }
}

/// `client_ca` and `client_auth` of a listener's `tls`.
fn client_certs(c: &mut Checker<'_>, key: &str, t: &raw::RawServerTls) -> Option<tls::ClientCerts> {
    let required = match t.client_auth.as_deref() {
        None | Some("optional") => false,
        Some("required") => true,
        Some(other) => {
            c.issue(
                format!("{key}.client_auth"),
                format!("`{other}` is not one of: optional, required"),
            );
            false
        }
    };
    match &t.client_ca {
        Some(path) => match tls::ClientCerts::load(resolve_path(c.base, path), required) {
            Ok(client) => Some(client),
            Err(e) => {
                c.issue(format!("{key}.client_ca"), e.to_string());
                None
            }
        },
        None => {
            for (field, set) in [
                ("client_auth", t.client_auth.is_some()),
                ("client_cert_header", t.client_cert_header.is_some()),
                ("client_cert_format", t.client_cert_format.is_some()),
            ] {
                if set {
                    c.issue(
                        format!("{key}.{field}"),
                        "is only used with client_ca (the CA bundle client certificates are checked against)",
                    );
                }
            }
            None
        }
    }
}

/// The header a listener's verified client certificates go to the backend in, and how.
pub(super) fn client_cert_header(
    c: &mut Checker<'_>,
    key: &str,
    t: &raw::RawServerTls,
) -> Option<(http::HeaderName, tls::ClientCertFormat)> {
    t.client_ca.as_ref()?;
    let format = match t.client_cert_format.as_deref() {
        None | Some("nginx") => tls::ClientCertFormat::Nginx,
        Some("rfc9440") => tls::ClientCertFormat::Rfc9440,
        Some(other) => {
            c.issue(
                format!("{key}.client_cert_format"),
                format!("`{other}` is not one of: nginx, rfc9440"),
            );
            tls::ClientCertFormat::Nginx
        }
    };
    let name = t
        .client_cert_header
        .as_deref()
        .unwrap_or(format.default_header());
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(header) if crate::headers::is_reserved(&header) => {
            c.issue(
                format!("{key}.client_cert_header"),
                format!("`{name}` is a header the proxy or HTTP itself decides"),
            );
            None
        }
        Ok(header) => Some((header, format)),
        Err(_) => {
            c.issue(
                format!("{key}.client_cert_header"),
                format!("`{name}` is not a header name"),
            );
            None
        }
    }
}
