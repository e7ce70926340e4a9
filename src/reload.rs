//! Reloading on file change. Kubernetes updates a mounted ConfigMap or Secret by writing a new
//! directory and swapping the `..data` symlink, which a watch on the file itself would miss (its
//! inode never changes). So the watcher reads what each path resolves to now, every interval,
//! and reloads when the contents change: the config file and every file it names (certificates,
//! keys, CA bundles, the sticky secret, the admin token). A reload that fails is logged and counted, and not
//! retried until the files change again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
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
    for l in &config.listeners {
        for cert in l.tls.iter().flat_map(|set| set.certificates()) {
            files.push(cert.cert_path.clone());
            files.push(cert.key_path.clone());
        }
        if let Some(client) = l.tls.as_ref().and_then(|set| set.client_certs()) {
            files.push(client.ca_path.clone());
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

/// A hash of the files' current contents (an unreadable file hashes as such, so a file that
/// disappears or comes back is a change too).
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for file in files {
        file.hash(&mut h);
        match std::fs::read(file) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
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
