//! The events of this process's VM: published by whoever changes its state
//! (the instance, the migration's observer, the adapter the engine drives),
//! logged once, and handed to every follower of `GET /api/v1/events`.
//!
//! A new follower first gets the latest [`RECENT`] events (so it learns
//! what happened just before it came, and `seq` tells it where it joined),
//! then each event as it is published. A follower has a bounded queue: when
//! it reads too slowly its newest events are dropped and it is told how
//! many with an `events-lost` line. Publishing never waits for a follower.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::events::{Event, EventKind};

/// Events a follower may have waiting before newer ones are dropped.
pub const FOLLOWER_QUEUE: usize = 1024;
/// The latest events a new follower gets first.
pub const RECENT: usize = 64;

/// Publishes the events of one VM.
pub struct EventHub {
    vm: String,
    inner: Mutex<Inner>,
}

struct Inner {
    seq: u64,
    recent: VecDeque<Event>,
    followers: Vec<Arc<Queue>>,
    closed: bool,
}

/// One follower's queue.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Event>,
    /// Dropped since the follower last read, and the last dropped `seq`.
    lost: u64,
    lost_seq: u64,
    /// No more events will come (the hub closed).
    closed: bool,
    /// The follower went away.
    gone: bool,
}

impl EventHub {
    pub fn new(vm: &str) -> Arc<EventHub> {
        Arc::new(EventHub {
            vm: vm.to_string(),
            inner: Mutex::new(Inner {
                seq: 0,
                recent: VecDeque::with_capacity(RECENT),
                followers: Vec::new(),
                closed: false,
            }),
        })
    }

    /// The VM's identity, as in every event.
    pub fn vm(&self) -> &str {
        &self.vm
    }

    /// Logs `kind` and queues it for every follower.
    pub fn publish(&self, kind: EventKind) {
        let mut inner = self.inner.lock().unwrap();
        inner.seq += 1;
        let event = Event {
            seq: inner.seq,
            unix_ms: unix_ms(),
            vm: self.vm.clone(),
            kind,
        };
        crate::logging::event(&event);
        inner.followers.retain(|q| q.push(&event));
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(event);
    }

    /// A new follower: the latest [`RECENT`] events, then every event
    /// published from now on, until the hub closes.
    pub fn follow(&self) -> Follower {
        let queue = Arc::new(Queue::default());
        let mut inner = self.inner.lock().unwrap();
        queue.state.lock().unwrap().events = inner.recent.clone();
        if inner.closed {
            queue.state.lock().unwrap().closed = true;
        } else {
            inner.followers.push(queue.clone());
        }
        Follower {
            queue,
            vm: self.vm.clone(),
        }
    }

    /// Ends every follower's stream once it has read what is queued, and
    /// waits up to `drain` for them to have done so.
    pub fn close(&self, drain: Duration) {
        let followers = {
            let mut inner = self.inner.lock().unwrap();
            inner.closed = true;
            std::mem::take(&mut inner.followers)
        };
        for q in &followers {
            q.state.lock().unwrap().closed = true;
            q.ready.notify_all();
        }
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline && followers.iter().any(|q| Arc::strong_count(q) > 1) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Followers still attached.
    #[cfg(test)]
    fn followers(&self) -> usize {
        self.inner.lock().unwrap().followers.len()
    }
}

impl Queue {
    /// Queues `event`, or counts it lost when full; false once the
    /// follower has gone, so the hub forgets it.
    fn push(&self, event: &Event) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.gone {
            return false;
        }
        if s.events.len() >= FOLLOWER_QUEUE {
            s.lost += 1;
            s.lost_seq = event.seq;
        } else {
            s.events.push_back(event.clone());
        }
        self.ready.notify_one();
        true
    }
}

/// The events of one follower, blocking until each comes; ends when the
/// hub closes.
pub struct Follower {
    queue: Arc<Queue>,
    vm: String,
}

impl Iterator for Follower {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let mut s = self.queue.state.lock().unwrap();
        loop {
            // Lost events are told where they were lost: after those queued.
            if s.events.is_empty() && s.lost > 0 {
                let count = std::mem::take(&mut s.lost);
                return Some(Event {
                    seq: s.lost_seq,
                    unix_ms: unix_ms(),
                    vm: self.vm.clone(),
                    kind: EventKind::EventsLost { count },
                });
            }
            if let Some(e) = s.events.pop_front() {
                return Some(e);
            }
            if s.closed {
                return None;
            }
            s = self.queue.ready.wait(s).unwrap();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut s = self.queue.state.lock().unwrap();
        s.gone = true;
        s.events.clear();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::events::Cause;

    fn paused() -> EventKind {
        EventKind::VmPaused {
            cause: Cause::Operator,
        }
    }

    #[test]
    fn followers_get_the_recent_events_then_new_ones_in_order() {
        let hub = EventHub::new("vm-a");
        for _ in 0..RECENT + 1 {
            hub.publish(paused());
        }
        let first = RECENT as u64 + 1;
        let mut a = hub.follow();
        let mut b = hub.follow();
        for _ in 0..3 {
            hub.publish(paused());
        }
        hub.close(Duration::ZERO);
        let seqs = |f: &mut Follower| f.by_ref().map(|e| e.seq).collect::<Vec<_>>();
        let want: Vec<u64> = (2..=first + 3).collect();
        assert_eq!(seqs(&mut a), want);
        assert_eq!(seqs(&mut b), want);
        let late: Vec<u64> = hub.follow().map(|e| e.seq).collect();
        assert_eq!(
            late.len(),
            RECENT,
            "a closed hub still tells its recent events"
        );
    }

    #[test]
    fn a_slow_follower_loses_events_and_is_told_without_stalling_anyone() {
        let hub = EventHub::new("vm-a");
        let mut slow = hub.follow();
        let total = FOLLOWER_QUEUE as u64 + 10;
        const { assert!(RECENT < FOLLOWER_QUEUE) };
        for _ in 0..total {
            hub.publish(paused()); // never blocks, though nobody reads
        }
        hub.close(Duration::ZERO);
        let got: Vec<Event> = slow.by_ref().collect();
        assert_eq!(got.len(), FOLLOWER_QUEUE + 1);
        let last = got.last().unwrap();
        assert_eq!(last.kind, EventKind::EventsLost { count: 10 });
        assert_eq!(last.seq, total);
        assert_eq!(got[FOLLOWER_QUEUE - 1].seq, FOLLOWER_QUEUE as u64);
    }

    #[test]
    fn a_follower_that_left_is_forgotten() {
        let hub = EventHub::new("vm-a");
        let f = hub.follow();
        assert_eq!(hub.followers(), 1);
        drop(f);
        hub.publish(paused());
        assert_eq!(hub.followers(), 0);
    }

    #[test]
    fn a_follower_waits_for_the_next_event() {
        let hub = EventHub::new("vm-a");
        let mut f = hub.follow();
        assert!(f.queue.state.lock().unwrap().events.is_empty());
        let h = hub.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            h.publish(paused());
        });
        assert_eq!(f.next().unwrap().seq, 1);
        t.join().unwrap();
    }
}
