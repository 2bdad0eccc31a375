//! [`Watch`]: a stream of changes under a prefix that can be resumed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::types::{Event, Revision};

/// What a backend's watch delivers.
pub(crate) trait WatchStream: Send {
    /// The next batch of events (one revision or more, in order), or an
    /// empty batch if none came before `until`.
    fn next_batch(&mut self, until: Instant) -> Result<Vec<Event>>;
}

/// Changes under a prefix, in revision order, each once. A watch that
/// fails (store down, connection lost) stays failed: start a new one from
/// [`Watch::resume_from`].
pub struct Watch {
    stream: Box<dyn WatchStream>,
    pending: VecDeque<Event>,
    next_revision: Revision,
}

impl Watch {
    pub(crate) fn new(stream: Box<dyn WatchStream>, first: Revision) -> Watch {
        Watch {
            stream,
            pending: VecDeque::new(),
            next_revision: first,
        }
    }

    /// The next change, waiting at most `wait`; None if none came.
    pub fn next(&mut self, wait: Duration) -> Result<Option<Event>> {
        let until = Instant::now() + wait;
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.next_revision = self.next_revision.max(e.revision() + 1);
                return Ok(Some(e));
            }
            let batch = self.stream.next_batch(until)?;
            if batch.is_empty() {
                return Ok(None);
            }
            // A resumed stream never repeats what this watch delivered.
            let seen = self.next_revision;
            self.pending
                .extend(batch.into_iter().filter(|e| e.revision() >= seen));
        }
    }

    /// The revision to watch from after this watch fails: the one after the
    /// last change it delivered (or its start if none).
    pub fn resume_from(&self) -> Revision {
        self.next_revision
    }
}
