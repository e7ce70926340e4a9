//! TLS on both sides. Server side: certificates loaded and checked at config time, an SNI
//! resolver that picks among them by the names each certificate carries (exact, then wildcard,
//! then the default), TLS 1.2/1.3 only, ALPN h2 and http/1.1, stateless session tickets.
//! Upstream side: a rustls client config per site (a CA bundle or the system roots, an optional
//! server name) used by the connector in `upstream.rs`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::ticket_keys::{TicketKeys, TicketKeysInfo};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {source}")]
    ReadCert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read private key file {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a usable private key: {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("private key {key} does not belong to certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path} is not a valid X.509 certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("CA bundle {path} holds no usable certificate")]
    EmptyCaBundle { path: PathBuf },
    #[error("no system CA certificates found; set `ca` to a PEM bundle")]
    NoSystemRoots,
    #[error("client CA bundle {path}: {reason}")]
    ClientVerifier { path: PathBuf, reason: String },
    #[error("`{0}` is not a valid TLS server name")]
    BadServerName(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider used everywhere (listeners, backends, health checks), so server and
/// client agree on algorithms: aws-lc-rs', for its post-quantum key exchange.
///
/// Key exchange: X25519MLKEM768 (X25519 with ML-KEM-768, the hybrid browsers offer first since
/// 2024), then the classical groups. A server takes the first group in the *client's* list that
/// it supports, so this order matters where sessiongate is the client (backends over TLS): the
/// hybrid, then X25519, then P-256, then P-384 (rustls' default puts P-384 before X25519, which
/// would cost a backend that follows the client's order the slower curve).
///
/// Cipher suites: AES-128-GCM ahead of AES-256-GCM (and the server's order winning, below).
/// OpenSSL clients ask for AES-256-GCM-SHA384 first, and its SHA-384 has no hardware path on
/// x86 (SHA-NI covers SHA-256 only): with the transcript hash and HKDF of every handshake it was
/// ~10% of the CPU of a new TLS connection (BENCHMARKS.md). AES-128-GCM is the first choice of
/// Mozilla's "modern" and "intermediate" profiles; nothing weaker is added.
///
/// Not ring, which rustls 0.23.48 deprecates because it has no post-quantum key exchange: a
/// session recorded today must not be readable by whoever builds a quantum computer later, and
/// Keycloak's traffic carries passwords and tokens.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    use rustls::crypto::aws_lc_rs::kx_group::{SECP256R1, SECP384R1, X25519, X25519MLKEM768};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![X25519MLKEM768, X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// A certificate chain and key, loaded and checked, with the names it answers to.
#[derive(Clone)]
pub struct LoadedCertificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// DNS names from the subjectAltName extension (`*.example.com` for wildcards), lowercase.
    pub names: Vec<String>,
    /// Expiry of the leaf certificate, as written in it.
    pub not_after: String,
    /// Expiry as a Unix timestamp, for the expiry metric.
    pub not_after_unix: i64,
    pub certified: Arc<CertifiedKey>,
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Loads a PEM chain and its key and checks that they belong together.
pub fn load_certificate(cert_path: &Path, key_path: &Path) -> Result<LoadedCertificate, TlsError> {
    let chain = read_certificates(cert_path)?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.into(),
        });
    };
    let (names, not_after, not_after_unix) =
        describe(leaf).map_err(|reason| TlsError::BadCertificate {
            path: cert_path.into(),
            reason,
        })?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::ReadKey {
        path: key_path.into(),
        source,
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey {
            path: key_path.into(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: cert_path.into(),
        key: key_path.into(),
    })?;
    Ok(LoadedCertificate {
        cert_path: cert_path.into(),
        key_path: key_path.into(),
        names,
        not_after,
        not_after_unix,
        certified: Arc::new(certified),
    })
}

/// Every certificate in a PEM file, in order.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert {
            path: path.into(),
            source,
        })
}

/// SAN DNS names (falling back to the subject CN, as old certificates rely on) and expiry.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, String, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    if names.is_empty() {
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    let not_after = cert.validity().not_after;
    Ok((names, not_after.to_string(), not_after.timestamp()))
}

/// The certificates of one listener and the rustls server config that serves them.
#[derive(Clone)]
pub struct CertificateSet {
    certificates: Vec<LoadedCertificate>,
    client_certs: Option<ClientCerts>,
    /// The file the session ticket keys came from; none: the process's own random key.
    ticket_keys: Option<TicketKeysInfo>,
    server_config: Arc<ServerConfig>,
}

/// Client certificates a listener asks for (Keycloak's X.509 login behind the proxy): checked
/// against `ca_path`, and required or optional.
#[derive(Clone)]
pub struct ClientCerts {
    pub ca_path: PathBuf,
    /// Without a certificate the handshake fails; else a client may send none (and log in
    /// another way), but one it sends must verify.
    pub required: bool,
    /// The bundle's certificates, to tell whether a reload changed whom the listener trusts.
    bundle: Vec<CertificateDer<'static>>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

/// The same trust: the same certificates, required or not alike (wherever the file lives).
impl PartialEq for ClientCerts {
    fn eq(&self, other: &ClientCerts) -> bool {
        self.required == other.required && self.bundle == other.bundle
    }
}

impl fmt::Debug for ClientCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCerts")
            .field("ca_path", &self.ca_path)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for CertificateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.certificates).finish()
    }
}

impl ClientCerts {
    /// Reads the CA bundle at `ca_path` and builds the verifier from it.
    pub fn load(ca_path: PathBuf, required: bool) -> Result<ClientCerts, TlsError> {
        let mut roots = RootCertStore::empty();
        let bundle = read_certificates(&ca_path)?;
        let (added, _) = roots.add_parsable_certificates(bundle.iter().cloned());
        if added == 0 {
            return Err(TlsError::EmptyCaBundle { path: ca_path });
        }
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        );
        let builder = if required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let verifier = builder.build().map_err(|e| TlsError::ClientVerifier {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(ClientCerts {
            ca_path,
            required,
            bundle,
            verifier,
        })
    }
}

/// How a verified client certificate is written into its header for the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertFormat {
    /// nginx's `$ssl_client_escaped_cert`, which Keycloak's `nginx` lookup reads.
    Nginx,
    /// RFC 9440's `Client-Cert`: the DER as a structured-field byte sequence, `:<base64>:`,
    /// which Keycloak's `rfc9440` lookup reads.
    Rfc9440,
}

impl ClientCertFormat {
    pub fn name(self) -> &'static str {
        match self {
            ClientCertFormat::Nginx => "nginx",
            ClientCertFormat::Rfc9440 => "rfc9440",
        }
    }

    /// The header it goes in unless configured otherwise.
    pub fn default_header(self) -> &'static str {
        match self {
            ClientCertFormat::Nginx => "ssl-client-cert",
            ClientCertFormat::Rfc9440 => "client-cert",
        }
    }

    /// Where the intermediates the client sent go, next to the certificate's header `leaf`:
    /// RFC 9440's `Client-Cert-Chain` (`<leaf>-chain`). nginx passes no chain, and Keycloak's
    /// `nginx` lookup completes it from its truststore.
    pub fn chain_header(self, leaf: &http::HeaderName) -> Option<http::HeaderName> {
        match self {
            ClientCertFormat::Nginx => None,
            ClientCertFormat::Rfc9440 => {
                http::HeaderName::from_bytes(format!("{leaf}-chain").as_bytes()).ok()
            }
        }
    }

    /// The headers' values for a client's verified `chain` (its certificate first): the
    /// certificate's, and the intermediates' as an RFC 9440 list when the format carries them
    /// and the client sent any. `None` when the client sent no certificate.
    pub fn values(
        self,
        chain: &[impl AsRef<[u8]>],
    ) -> Option<(http::HeaderValue, Option<http::HeaderValue>)> {
        let (leaf, intermediates) = chain.split_first()?;
        let leaf = http::HeaderValue::from_str(&self.value(leaf.as_ref())).ok()?;
        let intermediates = match self {
            ClientCertFormat::Rfc9440 if !intermediates.is_empty() => {
                let list: Vec<String> = intermediates
                    .iter()
                    .map(|der| self.value(der.as_ref()))
                    .collect();
                http::HeaderValue::from_str(&list.join(", ")).ok()
            }
            _ => None,
        };
        Some((leaf, intermediates))
    }

    /// The header's value for the certificate `der`.
    pub fn value(self, der: &[u8]) -> String {
        match self {
            ClientCertFormat::Nginx => escaped_pem(der),
            ClientCertFormat::Rfc9440 => {
                use base64::Engine;
                format!(
                    ":{}:",
                    base64::engine::general_purpose::STANDARD.encode(der)
                )
            }
        }
    }
}

/// A client certificate as nginx's `$ssl_client_escaped_cert` gives it, which Keycloak's
/// `nginx` X.509 lookup reads: the PEM, percent-encoded whole (Java's URL decoder would read a
/// bare `+` of base64 as a space, so everything but unreserved characters is escaped).
fn escaped_pem(der: &[u8]) -> String {
    use base64::Engine;
    use std::fmt::Write;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 64);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    // Lines of 64 characters, as RFC 7468 writes them (base64 is ASCII, so bytes are chars).
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 3 / 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The session ticket key of a listener without `ticket_keys`: random, rotated by rustls every
/// 6 hours, and one for the life of the process. Every reload builds new server configs; with a
/// key of their own, each reload would void every ticket issued before it and cost each
/// returning client a full handshake.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    static TICKETER: OnceLock<Arc<dyn rustls::server::ProducesTickets>> = OnceLock::new();
    if let Some(ticketer) = TICKETER.get() {
        return Ok(ticketer.clone());
    }
    let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(TICKETER.get_or_init(|| ticketer).clone())
}

/// TLS 1.3 tickets sent after a handshake, full or resumed. A client resumes with one ticket
/// and is sent a fresh one each time, so one is enough for browsers and most clients; rustls'
/// default of two makes every new connection pay for a ticket (sealing it and one more record)
/// that is rarely used.
const TLS13_TICKETS: usize = 1;

/// The most tickets sent to a client that asks for a number (RFC 9149 `ticket_request`), for
/// one that opens parallel connections and wants each to resume: a browser's six per host.
const TLS13_TICKETS_MAX: usize = 6;

impl CertificateSet {
    /// The first certificate is the default, served when the client's SNI matches none.
    /// Tickets are sealed with `ticket_keys` when given (shared by replicas), else with the
    /// process's own key.
    pub fn new(
        certificates: Vec<LoadedCertificate>,
        client_certs: Option<ClientCerts>,
        ticket_keys: Option<TicketKeys>,
    ) -> Result<CertificateSet, TlsError> {
        let resolver = Arc::new(SniResolver::new(&certificates));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &client_certs {
            None => builder.with_no_client_auth(),
            Some(client) => builder.with_client_cert_verifier(client.verifier.clone()),
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // The suite order above, not the client's, decides (all of them are strong).
        config.ignore_client_order = true;
        // Stateless tickets make resumption work across connections without a shared cache.
        let ticket_keys_info = ticket_keys.as_ref().map(TicketKeys::info);
        config.ticketer = match ticket_keys {
            Some(keys) => Arc::new(keys),
            None => ticketer()?,
        };
        config.send_tls13_tickets = TLS13_TICKETS;
        config.max_tls13_tickets = TLS13_TICKETS_MAX;
        Ok(CertificateSet {
            certificates,
            client_certs,
            ticket_keys: ticket_keys_info,
            server_config: Arc::new(config),
        })
    }

    pub fn certificates(&self) -> &[LoadedCertificate] {
        &self.certificates
    }

    pub fn client_certs(&self) -> Option<&ClientCerts> {
        self.client_certs.as_ref()
    }

    pub fn ticket_keys(&self) -> Option<&TicketKeysInfo> {
        self.ticket_keys.as_ref()
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }
}

/// Picks a certificate by SNI: an exact name, then a wildcard one label up, then the default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn new(certificates: &[LoadedCertificate]) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        // The first certificate listing a name wins, as in nginx and HAProxy.
        for cert in certificates {
            for name in &cert.names {
                let target = match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(name.clone()),
                };
                target.or_insert_with(|| cert.certified.clone());
            }
        }
        SniResolver {
            exact,
            wildcard,
            default: certificates[0].certified.clone(),
        }
    }

    fn lookup(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(client_hello.server_name()))
    }
}

/// TLS to the backends of one site.
#[derive(Clone)]
pub struct UpstreamTls {
    pub ca_path: Option<PathBuf>,
    /// Overrides the name checked in backend certificates (and sent as SNI).
    pub server_name: Option<String>,
    pub client_config: Arc<ClientConfig>,
    parsed_server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca_path", &self.ca_path)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl UpstreamTls {
    pub fn new(ca_path: Option<&Path>, server_name: Option<&str>) -> Result<UpstreamTls, TlsError> {
        let mut roots = RootCertStore::empty();
        match ca_path {
            Some(path) => {
                let (added, _) = roots.add_parsable_certificates(read_certificates(path)?);
                if added == 0 {
                    return Err(TlsError::EmptyCaBundle { path: path.into() });
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsError::NoSystemRoots);
                }
            }
        }
        let parsed_server_name = server_name
            .map(|n| {
                ServerName::try_from(n.to_string()).map_err(|_| TlsError::BadServerName(n.into()))
            })
            .transpose()?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            ca_path: ca_path.map(Path::to_path_buf),
            server_name: server_name.map(str::to_owned),
            client_config: Arc::new(config),
            parsed_server_name,
        })
    }

    /// The name to verify for a backend at `host`: the configured one, else the host itself.
    pub fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = &self.parsed_server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadServerName(host.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_for(names: &[&str]) -> LoadedCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "sg-tls-{}-{}",
            std::process::id(),
            names[0].replace('*', "w")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        load_certificate(&c, &k).unwrap()
    }

    #[test]
    fn sni_prefers_exact_then_wildcard_then_default() {
        let default = cert_for(&["default.test"]);
        let wild = cert_for(&["*.example.test"]);
        let exact = cert_for(&["auth.example.test"]);
        let r = SniResolver::new(&[default.clone(), wild.clone(), exact.clone()]);
        let same = |a: &Arc<CertifiedKey>, b: &LoadedCertificate| a.cert == b.certified.cert;
        assert!(same(&r.lookup(Some("AUTH.example.test.")), &exact));
        assert!(same(&r.lookup(Some("other.example.test")), &wild));
        assert!(same(&r.lookup(Some("deep.other.example.test")), &default));
        assert!(same(&r.lookup(Some("unknown.test")), &default));
        assert!(same(&r.lookup(None), &default));
        assert_eq!(wild.names, vec!["*.example.test".to_string()]);
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = cert_for(&["a.test"]);
        let b = cert_for(&["b.test"]);
        let err = load_certificate(&a.cert_path, &b.key_path).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }
}
