//! Admission control for one site: at most `max_in_flight` requests per backend, a bounded FIFO
//! of requests waiting for a slot (each for at most the queue timeout), and an immediate 503 for
//! the rest, without touching a backend.
//!
//! A slot is an [`InFlight`]: taken before a request is sent, released when its response body
//! has been sent or abandoned (the request record drops it), on every path. While requests wait,
//! newcomers join the queue instead of taking a freed slot, and a release hands the slot to the
//! first waiter that may use it (a sticky request waits for its own backend).
//!
//! The fast path (nobody waiting) is one compare-and-swap to take a slot and one decrement to
//! release it; the queue's lock is taken only while requests wait. No wake-up is lost: a waiter
//! counts itself in `waiting` before it looks for a free slot, and a release frees its slot
//! before it reads `waiting` (both sequentially consistent), so either the waiter sees the slot
//! or the release sees the waiter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;

use crate::backends::{Backend, InFlight};
use crate::config::Shedding;
use crate::health::now_ms;
use crate::metrics::Metrics;

/// Why a request was answered 503 without reaching a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    #[error("every backend is at its in-flight cap and the queue is full")]
    QueueFull,
    #[error("waited the queue timeout without a free slot")]
    QueueTimeout,
}

impl Shed {
    pub fn reason(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::QueueTimeout => "queue_timeout",
        }
    }
}

pub struct Admission {
    pub site: String,
    pub config: Shedding,
    queue: Mutex<Queue>,
    /// Mirrors `Queue::episode.is_some()`, so the fast path reads it without the lock.
    shedding: AtomicBool,
    /// Requests in the queue or about to join it, read without the lock.
    waiting: AtomicUsize,
    next_id: AtomicU64,
    metrics: AdmissionMetrics,
}

struct AdmissionMetrics {
    /// Counted up and down, not set: after a reload, two generations' queues may hold waiters
    /// at once, and the site's depth is their sum.
    depth: IntGauge,
    wait: Histogram,
    queue_full: IntCounter,
    queue_timeout: IntCounter,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiter>,
    episode: Option<Episode>,
}

struct Waiter {
    id: u64,
    /// The backend a sticky request waits for; `None`: any backend with a free slot.
    pinned: Option<Arc<Backend>>,
    handoff: oneshot::Sender<InFlight>,
}

/// A stretch of time during which requests were shed: logged when it starts and when it ends.
struct Episode {
    started: Instant,
    last_shed: Instant,
    shed: u64,
}

/// A shedding episode ends once a request is admitted at once, nobody is waiting, and nothing
/// was shed for this long: one line per episode, not one per request or per burst.
const QUIET: Duration = Duration::from_secs(1);

impl Admission {
    pub fn new(site: &str, config: Shedding, metrics: &Metrics) -> Admission {
        Admission {
            site: site.to_string(),
            config,
            queue: Mutex::new(Queue::default()),
            shedding: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            metrics: AdmissionMetrics {
                depth: metrics.queue_depth.with_label_values(&[site]),
                wait: metrics.queue_wait.with_label_values(&[site]),
                queue_full: metrics
                    .shed
                    .with_label_values(&[site, Shed::QueueFull.reason()]),
                queue_timeout: metrics
                    .shed
                    .with_label_values(&[site, Shed::QueueTimeout.reason()]),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a consistent queue: every step is one push or
        // one remove. Keep serving.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot on `backend` if it has one free and nobody is waiting (if someone is, the caller
    /// queues behind them).
    pub fn try_acquire(&self, backend: &Arc<Backend>) -> Option<InFlight> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let slot = InFlight::try_new(backend, self.config.max_in_flight)?;
        if self.shedding.load(Ordering::Relaxed) {
            self.maybe_end_episode();
        }
        Some(slot)
    }

    /// Waits in the queue for a slot. `retry` is run once under the queue's lock first (a slot
    /// may have been freed since the caller looked), then the request joins the queue, pinned to
    /// `pinned` when it is a sticky request that waits for its own backend. `retry` must take
    /// slots with [`InFlight::try_new`], never through this queue (its lock is held).
    pub async fn wait(
        &self,
        pinned: Option<Arc<Backend>>,
        retry: impl FnOnce() -> Option<InFlight>,
    ) -> Result<InFlight, Shed> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let receiver = {
            let mut queue = self.lock();
            // Counted before looking for a slot: see the module comment.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            if let Some(slot) = retry() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Ok(slot);
            }
            if queue.waiting.len() >= self.config.queue {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                self.shed(&mut queue, Shed::QueueFull);
                return Err(Shed::QueueFull);
            }
            let (handoff, receiver) = oneshot::channel();
            queue.waiting.push_back(Waiter {
                id,
                pinned,
                handoff,
            });
            self.metrics.depth.inc();
            receiver
        };
        // Leaves the queue however this ends: handed a slot, timed out, or the client went
        // away (the future is dropped).
        let _leave = Leave {
            admission: self,
            id,
        };
        let start = Instant::now();
        let outcome = tokio::time::timeout(self.config.queue_timeout, receiver).await;
        self.metrics.wait.observe(start.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(slot)) => Ok(slot),
            // The sender is dropped only with the queue entry, which only `Leave` removes.
            Ok(Err(_)) | Err(_) => {
                let mut queue = self.lock();
                self.shed(&mut queue, Shed::QueueTimeout);
                Err(Shed::QueueTimeout)
            }
        }
    }

    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Called after a slot on `backend` was freed: hands a slot to the first waiter that may
    /// use it, if anyone waits.
    pub fn released(&self, backend: &Arc<Backend>) {
        if self.has_waiters() {
            self.dispatch(std::iter::once(backend));
        }
    }

    /// Hands free slots to waiters after the set changed (a backend joined or came back up),
    /// since no release would wake them.
    pub fn kick<'a>(&self, members: impl Iterator<Item = &'a Arc<Backend>> + Clone) {
        self.dispatch(members);
    }

    /// Gives waiters, in order, slots on `candidates`: a sticky waiter only on its own backend,
    /// the others on any candidate that is available and not leaving.
    fn dispatch<'a>(&self, candidates: impl Iterator<Item = &'a Arc<Backend>> + Clone) {
        let mut unclaimed = Vec::new();
        let mut queue = self.lock();
        let now = now_ms();
        let mut i = 0;
        while i < queue.waiting.len() {
            let slot = match &queue.waiting[i].pinned {
                Some(own) => candidates
                    .clone()
                    .find(|b| Arc::ptr_eq(b, own))
                    .and_then(|b| InFlight::try_new(b, self.config.max_in_flight)),
                None => candidates
                    .clone()
                    .filter(|b| b.health.available(now) && !b.is_leaving())
                    .find_map(|b| InFlight::try_new(b, self.config.max_in_flight)),
            };
            let Some(slot) = slot else {
                i += 1;
                continue;
            };
            let waiter = queue.waiting.remove(i).expect("index is in range");
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics.depth.dec();
            if let Err(slot) = waiter.handoff.send(slot) {
                // The waiter gave up meanwhile. Freed once the lock is released: its drop
                // takes the lock.
                unclaimed.push(slot);
            }
        }
        drop(queue);
        drop(unclaimed);
    }

    pub fn depth(&self) -> usize {
        self.lock().waiting.len()
    }

    fn shed(&self, queue: &mut Queue, why: Shed) {
        match why {
            Shed::QueueFull => self.metrics.queue_full.inc(),
            Shed::QueueTimeout => self.metrics.queue_timeout.inc(),
        }
        let now = Instant::now();
        match &mut queue.episode {
            Some(episode) => {
                episode.shed += 1;
                episode.last_shed = now;
            }
            None => {
                tracing::warn!(
                    site = %self.site,
                    reason = why.reason(),
                    max_in_flight_per_backend = self.config.max_in_flight,
                    queue = self.config.queue,
                    "shedding load: answering 503 to requests no backend can take"
                );
                queue.episode = Some(Episode {
                    started: now,
                    last_shed: now,
                    shed: 1,
                });
                self.shedding.store(true, Ordering::Relaxed);
            }
        }
    }

    fn maybe_end_episode(&self) {
        let mut queue = self.lock();
        let quiet = queue
            .episode
            .as_ref()
            .is_some_and(|e| queue.waiting.is_empty() && e.last_shed.elapsed() >= QUIET);
        if quiet {
            let episode = queue.episode.take().expect("checked above");
            self.shedding.store(false, Ordering::Relaxed);
            tracing::warn!(
                site = %self.site,
                shed = episode.shed,
                lasted = ?episode.started.elapsed(),
                "stopped shedding load"
            );
        }
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("site", &self.site)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Leave<'a> {
    admission: &'a Admission,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut queue = self.admission.lock();
        if let Some(i) = queue.waiting.iter().position(|w| w.id == self.id) {
            queue.waiting.remove(i);
            self.admission.waiting.fetch_sub(1, Ordering::SeqCst);
            self.admission.metrics.depth.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::backends::{test_site, Member};

    fn site_with_queue(queue: usize) -> (crate::backends::Site, Arc<Admission>) {
        let mut site = test_site();
        let admission = Arc::new(Admission::new(
            "s",
            Shedding {
                max_in_flight: 1,
                queue,
                queue_timeout: Duration::from_secs(3600),
                sticky_waits: true,
            },
            &Metrics::new(),
        ));
        site.admission = Some(admission.clone());
        let members: Vec<Member> = ["x", "y"]
            .iter()
            .enumerate()
            .map(|(i, id)| Member {
                id: id.to_string(),
                address: format!("127.0.0.1:{}", 9000 + i),
                priority: 0,
                weight: 1,
            })
            .collect();
        let (site, _) = site.successor(&members, Instant::now(), Duration::from_secs(60));
        (site, admission)
    }

    #[tokio::test]
    async fn released_slots_go_to_waiters_in_order_and_sticky_ones_wait_for_their_own() {
        let (site, admission) = site_with_queue(2);
        let x = site.backends[0].clone();
        let y = site.backends[1].clone();
        let on_x = admission.try_acquire(&x).unwrap();
        let on_y = admission.try_acquire(&y).unwrap();
        assert!(admission.try_acquire(&x).is_none(), "the cap is 1");

        let a2 = admission.clone();
        let pinned_to_x = tokio::spawn({
            let x = x.clone();
            async move { a2.wait(Some(x), || None).await }
        });
        while admission.depth() < 1 {
            tokio::task::yield_now().await;
        }
        let a3 = admission.clone();
        let anyone = tokio::spawn(async move { a3.wait(None, || None).await });
        while admission.depth() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            admission.wait(None, || None).await.err(),
            Some(Shed::QueueFull),
            "the queue holds two"
        );

        // y's slot skips the waiter pinned to x and goes to the next one.
        drop(on_y);
        let handed = anyone.await.unwrap().unwrap();
        assert_eq!(handed.backend().id, "y");
        assert_eq!(y.in_flight(), 1, "handed over, not freed");
        drop(on_x);
        assert_eq!(pinned_to_x.await.unwrap().unwrap().backend().id, "x");
        assert_eq!(admission.depth(), 0);
        drop(handed);
        assert_eq!((x.in_flight(), y.in_flight()), (0, 0));
    }

    #[tokio::test]
    async fn slots_are_freed_when_nobody_waits_and_given_to_joiners() {
        let (site, admission) = site_with_queue(4);
        let x = site.backends[0].clone();
        let slot = admission.try_acquire(&x).unwrap();
        assert_eq!(x.in_flight(), 1);
        drop(slot);
        assert_eq!(x.in_flight(), 0);

        // Everyone full; a waiter is admitted by kick() once a member with room appears.
        let held: Vec<_> = site
            .members()
            .map(|b| admission.try_acquire(b).unwrap())
            .collect();
        let a2 = admission.clone();
        let waiter = tokio::spawn(async move { a2.wait(None, || None).await.is_ok() });
        while admission.depth() < 1 {
            tokio::task::yield_now().await;
        }
        let (grown, _) = site.successor(
            &[
                Member {
                    id: "x".into(),
                    address: "127.0.0.1:9000".into(),
                    priority: 0,
                    weight: 1,
                },
                Member {
                    id: "z".into(),
                    address: "127.0.0.1:9009".into(),
                    priority: 0,
                    weight: 1,
                },
            ],
            Instant::now(),
            Duration::from_secs(60),
        );
        admission.kick(grown.members());
        assert!(waiter.await.unwrap());
        drop(held);
    }
}
