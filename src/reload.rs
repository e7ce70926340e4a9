//! Reloading on file change. Kubernetes updates a mounted ConfigMap or Secret by writing a new
//! directory and swapping the `..data` symlink, which a watch on the file itself would miss (its
//! inode never changes). So the watcher reads what each path resolves to now, every interval,
//! and reloads when the contents change: the config file and every file it names (certificates,
//! keys, CA bundles, session ticket keys, error pages, the sticky secret, the admin token). A reload that fails is logged and counted, and not
//! retried until the files change again.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, StickyMode};
use crate::Inner;

/// The files a configuration depends on.
pub fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from(&config.source)];
    files.extend(config.admin.token_file.clone());
    files.extend(config.error_pages.iter().map(|page| page.path.clone()));
    for l in &config.listeners {
        for cert in l.tls.iter().flat_map(|set| set.certificates()) {
            files.push(cert.cert_path.clone());
            files.push(cert.key_path.clone());
        }
        if let Some(client) = l.tls.as_ref().and_then(|set| set.client_certs()) {
            files.push(client.ca_path.clone());
        }
        if let Some(keys) = l.tls.as_ref().and_then(|set| set.ticket_keys()) {
            files.push(keys.path.clone());
        }
    }
    for site in &config.sites {
        if let Some(ca) = site.tls.as_ref().and_then(|t| t.ca_path.clone()) {
            files.push(ca);
        }
    }
    if let Some(StickyMode::Cookie {
        secret_file: Some(file),
        ..
    }) = &config.balance.sticky
    {
        files.push(file.clone());
    }
    files
}

/// A hash of the files' paths and current contents (an unreadable file hashes as such, so a
/// file that disappears or comes back is a change too). SHA-256, not std's hasher, whose output
/// may change between Rust releases: replicas compare it (`sessiongate_config_hash`) even while
/// a rolling upgrade runs two builds. 48 bits, which a Prometheus sample holds exactly.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for file in files {
        let path = file.as_os_str().as_encoded_bytes();
        h.update(&(path.len() as u64).to_be_bytes());
        h.update(path);
        match std::fs::read(file) {
            Ok(bytes) => {
                h.update(&(bytes.len() as u64).to_be_bytes());
                h.update(&bytes);
            }
            Err(e) => h.update(format!("unreadable: {:?}", e.kind()).as_bytes()),
        }
    }
    let digest = h.finish();
    let mut first = [0u8; 8];
    first[2..].copy_from_slice(&digest.as_ref()[..6]);
    u64::from_be_bytes(first)
}

pub(crate) async fn watch(inner: Weak<Inner>, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (files, loaded) = {
            let running = inner.running.lock().await;
            (watched_files(&running.config), running.loaded)
        };
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&files)).await else {
            continue;
        };
        // Also after a SIGHUP, or a reload this watcher started that was refused: what the
        // files say was loaded already.
        if now == loaded {
            continue;
        }
        tracing::info!("configuration files changed; reloading");
        // The outcome is logged and counted by `reload` itself.
        let _ = inner.reload().await;
    }
}
