//! Paths only some client networks may reach (`[[listener.restrict]]`), as nginx's `allow` and
//! `deny` in a `location` and HAProxy's `http-request deny if { path_beg /admin } !{ src ... }`.
//! Keycloak's guide lists its admin console (`/admin/`) among the paths not to expose; where
//! operators still need it through the same proxy, only their own networks should reach it.
//!
//! The client is the one rate limits count (`headers::client_address`): the peer, or behind
//! `trusted_proxies` the nearest address they forwarded, or the PROXY protocol header's. Paths
//! match as `deny_paths` do (canonical, whole segments, the disguises a deny covers). Every
//! rule covering a path must admit the client, so a narrow rule never opens what a broad one
//! closes, whatever their order.

use std::net::IpAddr;

use http::StatusCode;
use ipnet::IpNet;

use crate::paths::Prefix;

/// One rule as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// Canonical path prefixes the rule covers (with their copies under `relative_path`).
    pub paths: Vec<Prefix>,
    /// As written, for `check-config`.
    pub paths_text: Vec<String>,
    /// The networks whose clients may reach those paths.
    pub allow_from: Vec<IpNet>,
    /// What everyone else is answered (403 unless configured).
    pub status: StatusCode,
}

impl Restriction {
    fn covers(&self, canonical: &str) -> bool {
        self.paths.iter().any(|p| p.matches(canonical))
    }

    fn admits(&self, client: IpAddr) -> bool {
        self.allow_from.iter().any(|net| net.contains(&client))
    }
}

/// `Err(status)` when a rule covering the canonical `path` does not admit `client`.
pub fn check(rules: &[Restriction], path: &str, client: IpAddr) -> Result<(), StatusCode> {
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`.
    let client = client.to_canonical();
    match rules.iter().find(|r| r.covers(path) && !r.admits(client)) {
        Some(rule) => Err(rule.status),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(paths: &[&str], from: &[&str], status: u16) -> Restriction {
        Restriction {
            paths: paths.iter().map(|p| Prefix::parse(p).unwrap()).collect(),
            paths_text: paths.iter().map(|p| p.to_string()).collect(),
            allow_from: from.iter().map(|n| n.parse().unwrap()).collect(),
            status: StatusCode::from_u16(status).unwrap(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_covered_path_is_refused_to_clients_outside_the_networks() {
        let rules = [rule(&["/admin/"], &["10.0.0.0/8", "2001:db8::/32"], 403)];
        for (path, client, allowed) in [
            ("/admin/master/console/", "10.1.2.3", true),
            ("/admin/master/console/", "2001:db8::7", true),
            // An IPv4 client on a dual-stack socket.
            ("/admin/master/console/", "::ffff:10.1.2.3", true),
            ("/admin/master/console/", "192.0.2.1", false),
            ("/admin", "192.0.2.1", false),
            ("/ADMIN/x", "192.0.2.1", false),
            // What a deny covers, a restriction covers: a suffix, trailing dots.
            ("/admin.json/x", "192.0.2.1", false),
            ("/admin./x", "192.0.2.1", false),
            ("/admin/x", "::ffff:192.0.2.1", false),
            // Other paths, and a longer name, are not the rule's.
            ("/administrator", "192.0.2.1", true),
            ("/realms/master/", "192.0.2.1", true),
        ] {
            let got = check(&rules, path, ip(client));
            assert_eq!(got.is_ok(), allowed, "{path} from {client}");
        }
    }

    #[test]
    fn every_rule_covering_a_path_must_admit_the_client() {
        // A narrow rule listed first, more open than the broad one: it cannot open /admin/x.
        let rules = [
            rule(&["/admin/x/"], &["0.0.0.0/0"], 404),
            rule(&["/admin/"], &["10.0.0.0/8"], 403),
        ];
        let refused = check(&rules, "/admin/x/y", ip("192.0.2.1"));
        assert_eq!(refused, Err(StatusCode::FORBIDDEN));
        assert_eq!(check(&rules, "/admin/x/y", ip("10.0.0.1")), Ok(()));
        // The first rule that refuses decides the status.
        let rules = [
            rule(&["/admin/x/"], &["10.9.0.0/16"], 404),
            rule(&["/admin/"], &["10.0.0.0/8"], 403),
        ];
        let refused = check(&rules, "/admin/x/y", ip("10.0.0.1"));
        assert_eq!(refused, Err(StatusCode::NOT_FOUND));
    }
}
