//! The failover state machine, free of I/O: sites in order of preference, each judged UP or
//! DOWN by its probes with rise/fall thresholds, or forced down by an operator. The active site
//! is kept while it is eligible; when it is not, traffic moves to the most preferred eligible
//! site. It moves back only when an operator says so (manual failback, the default) or, with
//! `auto`, once the preferred site has been UP for the hold time. With no eligible site, the
//! last active one keeps serving.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Probe results kept per site for the admin API.
const HISTORY: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteHealth {
    /// Not probed yet, or not probed at all (no `[site.lb_check]`): eligible.
    Unknown,
    Up,
    Down,
}

impl SiteHealth {
    pub fn label(self) -> &'static str {
        match self {
            SiteHealth::Unknown => "unknown",
            SiteHealth::Up => "up",
            SiteHealth::Down => "down",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProbeRecord {
    pub at: std::time::SystemTime,
    pub up: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct SiteState {
    pub name: String,
    pub health: SiteHealth,
    pub forced_down: bool,
    pub up_since: Option<Instant>,
    passes: u32,
    failures: u32,
    rise: u32,
    fall: u32,
    pub history: VecDeque<ProbeRecord>,
}

impl SiteState {
    fn eligible(&self) -> bool {
        !self.forced_down && self.health != SiteHealth::Down
    }
}

/// Why the active site changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The active site went DOWN or was forced down.
    Failover,
    /// Automatic failback after the hold time.
    AutoFailback,
    /// An operator asked for this site.
    Switchover,
    /// An operator asked to go back to the preferred site.
    Failback,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Failover => "failover",
            Reason::AutoFailback => "auto_failback",
            Reason::Switchover => "switchover",
            Reason::Failback => "failback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Switched {
        from: usize,
        to: usize,
        reason: Reason,
    },
    /// A site went UP or DOWN by its probes.
    Health { site: usize, health: SiteHealth },
    /// The active site is not eligible and no other is: staying on it.
    NoSiteUp { staying: usize },
    /// A preferred site is UP again; failback waits for an operator.
    FailbackPending { site: usize },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OperationError {
    #[error("no site named `{0}`")]
    UnknownSite(String),
    #[error("site `{0}` is DOWN or forced down; release it or wait until it is UP")]
    NotEligible(String),
}

#[derive(Debug, Clone)]
pub struct State {
    pub sites: Vec<SiteState>,
    pub active: usize,
    auto_failback: Option<Duration>,
    /// Set while no site is eligible, so it is said once per episode.
    stranded: bool,
    /// Sites whose pending failback was already announced.
    announced: Vec<bool>,
}

impl State {
    /// `sites`: name, rise and fall, in order of preference.
    pub fn new(sites: Vec<(String, u32, u32)>, auto_failback: Option<Duration>) -> State {
        let n = sites.len();
        State {
            sites: sites
                .into_iter()
                .map(|(name, rise, fall)| SiteState {
                    name,
                    health: SiteHealth::Unknown,
                    forced_down: false,
                    up_since: None,
                    passes: 0,
                    failures: 0,
                    rise,
                    fall,
                    history: VecDeque::new(),
                })
                .collect(),
            active: 0,
            auto_failback,
            stranded: false,
            announced: vec![false; n],
        }
    }

    pub fn index_of(&self, name: &str) -> Result<usize, OperationError> {
        self.sites
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| OperationError::UnknownSite(name.to_string()))
    }

    /// A probe of site `i` finished.
    pub fn probed(&mut self, i: usize, up: bool, detail: String, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let site = &mut self.sites[i];
        site.history.push_front(ProbeRecord {
            at: std::time::SystemTime::now(),
            up,
            detail,
        });
        site.history.truncate(HISTORY);
        if up {
            site.passes += 1;
            site.failures = 0;
            // The first result counts at once: a site that starts UP is UP.
            let first = site.health == SiteHealth::Unknown;
            if site.health != SiteHealth::Up && (first || site.passes >= site.rise) {
                site.health = SiteHealth::Up;
                site.up_since = Some(now);
                events.push(Event::Health {
                    site: i,
                    health: SiteHealth::Up,
                });
            }
        } else {
            site.failures += 1;
            site.passes = 0;
            if site.health != SiteHealth::Down && site.failures >= site.fall {
                site.health = SiteHealth::Down;
                site.up_since = None;
                self.announced[i] = false;
                events.push(Event::Health {
                    site: i,
                    health: SiteHealth::Down,
                });
            }
        }
        events.extend(self.decide(now));
        events
    }

    /// Re-evaluates the active site (also called on a timer, for automatic failback).
    pub fn decide(&mut self, now: Instant) -> Option<Event> {
        if !self.sites[self.active].eligible() {
            return match self.sites.iter().position(SiteState::eligible) {
                Some(to) => {
                    self.stranded = false;
                    Some(self.switch(to, Reason::Failover))
                }
                None if !self.stranded => {
                    self.stranded = true;
                    Some(Event::NoSiteUp {
                        staying: self.active,
                    })
                }
                None => None,
            };
        }
        self.stranded = false;
        // A more preferred site that is UP again.
        let preferred = (0..self.active).find(|&i| {
            let s = &self.sites[i];
            s.eligible() && s.health == SiteHealth::Up
        })?;
        match self.auto_failback {
            Some(hold) => {
                let since = self.sites[preferred].up_since?;
                (now.duration_since(since) >= hold)
                    .then(|| self.switch(preferred, Reason::AutoFailback))
            }
            None if !self.announced[preferred] => {
                self.announced[preferred] = true;
                Some(Event::FailbackPending { site: preferred })
            }
            None => None,
        }
    }

    /// Planned switch to a named site, which must be eligible.
    pub fn switchover(&mut self, name: &str) -> Result<Option<Event>, OperationError> {
        let to = self.index_of(name)?;
        if !self.sites[to].eligible() {
            return Err(OperationError::NotEligible(name.to_string()));
        }
        Ok((to != self.active).then(|| self.switch(to, Reason::Switchover)))
    }

    /// Back to the most preferred eligible site.
    pub fn failback(&mut self) -> Option<Event> {
        let to = self.sites.iter().position(SiteState::eligible)?;
        (to != self.active).then(|| self.switch(to, Reason::Failback))
    }

    /// Takes a site out of rotation whatever its probes say (the trick of pointing the health
    /// check at a missing path, without the trick).
    pub fn force_down(
        &mut self,
        name: &str,
        now: Instant,
    ) -> Result<Option<Event>, OperationError> {
        let i = self.index_of(name)?;
        self.sites[i].forced_down = true;
        Ok(self.decide(now))
    }

    /// Lets a forced-down site be judged by its probes again. It does not take traffic back by
    /// itself under manual failback.
    pub fn release(&mut self, name: &str, now: Instant) -> Result<Option<Event>, OperationError> {
        let i = self.index_of(name)?;
        self.sites[i].forced_down = false;
        self.announced[i] = false;
        Ok(self.decide(now))
    }

    fn switch(&mut self, to: usize, reason: Reason) -> Event {
        let from = self.active;
        self.active = to;
        Event::Switched { from, to, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two(auto: Option<Duration>) -> State {
        State::new(vec![("a".into(), 2, 3), ("b".into(), 2, 3)], auto)
    }

    fn switched(events: &[Event]) -> Option<(usize, Reason)> {
        events.iter().find_map(|e| match e {
            Event::Switched { to, reason, .. } => Some((*to, *reason)),
            _ => None,
        })
    }

    #[test]
    fn fails_over_after_fall_failures_and_stays_under_manual_failback() {
        let now = Instant::now();
        let mut s = two(None);
        assert!(s
            .probed(0, true, String::new(), now)
            .contains(&Event::Health {
                site: 0,
                health: SiteHealth::Up
            }));
        s.probed(1, true, String::new(), now);
        assert_eq!(switched(&s.probed(0, false, String::new(), now)), None);
        assert_eq!(switched(&s.probed(0, false, String::new(), now)), None);
        assert_eq!(
            switched(&s.probed(0, false, String::new(), now)),
            Some((1, Reason::Failover)),
            "the third failure (fall = 3) moves traffic"
        );
        // a comes back: rise = 2 passes, then failback is announced once, never done.
        assert_eq!(s.probed(0, true, String::new(), now), vec![]);
        let events = s.probed(0, true, String::new(), now);
        assert!(
            events.contains(&Event::FailbackPending { site: 0 }),
            "{events:?}"
        );
        for _ in 0..5 {
            assert_eq!(
                s.probed(0, true, String::new(), now + Duration::from_secs(3600)),
                vec![]
            );
        }
        assert_eq!(s.active, 1);
        assert_eq!(
            s.failback(),
            Some(Event::Switched {
                from: 1,
                to: 0,
                reason: Reason::Failback
            })
        );
    }

    #[test]
    fn auto_failback_waits_for_the_hold_time() {
        let now = Instant::now();
        let hold = Duration::from_secs(60);
        let mut s = two(Some(hold));
        for _ in 0..3 {
            s.probed(0, false, String::new(), now);
        }
        assert_eq!(s.active, 1);
        s.probed(0, true, String::new(), now);
        s.probed(0, true, String::new(), now);
        assert_eq!(s.decide(now + hold / 2), None);
        assert_eq!(
            s.decide(now + hold),
            Some(Event::Switched {
                from: 1,
                to: 0,
                reason: Reason::AutoFailback
            })
        );
    }

    #[test]
    fn with_no_site_up_the_last_active_keeps_serving() {
        let now = Instant::now();
        let mut s = two(None);
        s.force_down("b", now).unwrap();
        let mut said = 0;
        for _ in 0..6 {
            said += s
                .probed(0, false, String::new(), now)
                .iter()
                .filter(|e| matches!(e, Event::NoSiteUp { staying: 0 }))
                .count();
        }
        assert_eq!((s.active, said), (0, 1), "stays on a, says so once");
        // b released (not judged DOWN by any probe): traffic moves there, a is still DOWN.
        let event = s.release("b", now).unwrap();
        assert_eq!(
            event,
            Some(Event::Switched {
                from: 0,
                to: 1,
                reason: Reason::Failover
            })
        );
    }

    #[test]
    fn operations_check_their_target() {
        let now = Instant::now();
        let mut s = two(None);
        assert_eq!(
            s.switchover("c"),
            Err(OperationError::UnknownSite("c".into()))
        );
        assert_eq!(
            s.switchover("b").unwrap(),
            Some(Event::Switched {
                from: 0,
                to: 1,
                reason: Reason::Switchover
            })
        );
        assert_eq!(s.switchover("b").unwrap(), None, "already there");
        s.force_down("a", now).unwrap();
        assert_eq!(
            s.switchover("a"),
            Err(OperationError::NotEligible("a".into()))
        );
        assert_eq!(s.failback(), None, "b is the most preferred eligible site");
        // Forcing the active site down fails over like a DOWN probe.
        s.release("a", now).unwrap();
        let event = s.force_down("b", now).unwrap();
        assert_eq!(
            event,
            Some(Event::Switched {
                from: 1,
                to: 0,
                reason: Reason::Failover
            })
        );
    }
}
