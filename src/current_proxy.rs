//! The proxy that serves the next request. A reload builds a new [`Proxy`] (routing, sites,
//! balancing, stickiness, failover) and stores it here; a connection the reload keeps open
//! serves its next request with it, so a reload that leaves a listener's per-connection
//! settings alone does not cycle that listener's connections (Envoy does the same on a route
//! or cluster change; nginx and HAProxy reloads close every kept-alive connection).
//!
//! A request holds the proxy it began with until its response ends: it finishes on the
//! configuration it was routed by.

use std::sync::Arc;

use arc_swap::cache::Cache;
use arc_swap::ArcSwap;

use crate::proxy::Proxy;

/// Shared by every listener; stored by a reload's commit.
pub type CurrentProxy = ArcSwap<Proxy>;

/// An HTTP/1.1 connection's hold on the current proxy. A request costs one relaxed load of the
/// shared pointer, and touches the reference count only after a reload or an idle spell; an
/// idle connection lets go of it ([`ConnProxy::release`]), so a kept-alive connection that
/// sleeps through a reload does not keep the previous generation's proxy (its backends and
/// their pooled connections) alive.
pub struct ConnProxy<'a> {
    current: &'a CurrentProxy,
    held: Option<Cache<&'a CurrentProxy, Arc<Proxy>>>,
}

impl<'a> ConnProxy<'a> {
    pub fn new(current: &'a CurrentProxy) -> ConnProxy<'a> {
        ConnProxy {
            current,
            held: None,
        }
    }

    /// The proxy for the request about to be served.
    pub fn get(&mut self) -> &Proxy {
        let current = self.current;
        self.held.get_or_insert_with(|| Cache::new(current)).load()
    }

    /// Lets go of the proxy while the connection idles.
    pub fn release(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::failover::Failover;
    use crate::metrics::Metrics;

    fn proxy() -> Arc<Proxy> {
        let text = "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n\
                    [[site]]\nbackends = { static = [\"127.0.0.1:1\"] }\n";
        let config = Config::from_toml(text, "test", std::path::Path::new(".")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let snapshot = Arc::new(ArcSwap::from_pointee(crate::backends::initial(
            &config, &metrics,
        )));
        let failover = Arc::new(Failover::new(&config, snapshot.clone(), metrics.clone()));
        Arc::new(Proxy::new(snapshot, &config, metrics, failover))
    }

    #[test]
    fn a_connection_sees_a_stored_proxy_at_its_next_request_and_holds_none_released() {
        let first = proxy();
        let current = CurrentProxy::new(first.clone());
        let mut conn = ConnProxy::new(&current);
        assert!(std::ptr::eq(conn.get(), &*first));
        assert_eq!(
            Arc::strong_count(&first),
            3,
            "the cell, the test and the connection"
        );

        let second = proxy();
        current.store(second.clone());
        assert!(std::ptr::eq(conn.get(), &*second));
        assert_eq!(
            Arc::strong_count(&first),
            1,
            "the connection let the old one go"
        );

        conn.release();
        assert_eq!(Arc::strong_count(&second), 2, "the cell and the test");
        assert!(std::ptr::eq(conn.get(), &*second));
    }
}
