//! etcd watches as the store's [`WatchStream`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions, WatchResponse};
use tokio::runtime::Runtime;

use super::EtcdBackend;
use super::convert::{key_value, map_error};
use crate::error::{Result, StoreError};
use crate::types::{Event, EventKind, Revision};
use crate::watch::WatchStream;

pub(super) struct EtcdWatch {
    rt: Arc<Runtime>,
    stream: etcd_client::WatchStream,
    requested: Revision,
    deadline: Duration,
}

impl EtcdWatch {
    /// Creates the watch and waits for etcd to confirm it; returns the first
    /// revision it may deliver.
    pub(super) fn start(
        backend: &EtcdBackend,
        prefix: &str,
        from: Option<Revision>,
    ) -> Result<(EtcdWatch, Revision)> {
        let mut options = if prefix.is_empty() {
            WatchOptions::new().with_all_keys()
        } else {
            WatchOptions::new().with_prefix()
        };
        if let Some(r) = from {
            options = options.with_start_revision(r);
        }
        let prefix = prefix.to_owned();
        let (stream, created) = backend.call("watch", None, |mut c| async move {
            let mut stream = c.watch(prefix, Some(options)).await?;
            let created = stream.message().await?;
            Ok((stream, created))
        })?;
        let mut watch = EtcdWatch {
            rt: Arc::clone(&backend.rt),
            stream,
            requested: from.unwrap_or(0),
            deadline: backend.deadline,
        };
        let Some(created) = created else {
            return Err(ended("watch"));
        };
        watch.check(&created)?;
        let now = created.header().map_or(0, |h| h.revision());
        Ok((watch, from.unwrap_or(now + 1)))
    }

    /// A canceled watch is an error: compacted history, or etcd's reason.
    fn check(&mut self, resp: &WatchResponse) -> Result<()> {
        if !resp.canceled() {
            return Ok(());
        }
        if resp.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                requested: self.requested,
                compacted: resp.compact_revision(),
            });
        }
        Err(StoreError::Unavailable {
            op: "watch",
            reason: format!("canceled by etcd: {}", resp.cancel_reason()),
        })
    }
}

fn ended(op: &'static str) -> StoreError {
    StoreError::Unavailable {
        op,
        reason: "etcd closed the watch".into(),
    }
}

impl WatchStream for EtcdWatch {
    fn next_batch(&mut self, until: Instant) -> Result<Vec<Event>> {
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            let stream = &mut self.stream;
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(wait, stream.message()).await });
            let resp = match got {
                Err(_) => return Ok(Vec::new()),
                Ok(Err(e)) => return Err(map_error("watch", e, None, self.deadline)),
                Ok(Ok(None)) => return Err(ended("watch")),
                Ok(Ok(Some(resp))) => resp,
            };
            self.check(&resp)?;
            let mut events = Vec::with_capacity(resp.events().len());
            for e in resp.events() {
                let Some(kv) = e.kv() else { continue };
                let kind = match e.event_type() {
                    EventType::Put => EventKind::Put,
                    EventType::Delete => EventKind::Delete,
                };
                events.push(Event {
                    kind,
                    kv: key_value(kv)?,
                });
            }
            if !events.is_empty() || Instant::now() >= until {
                return Ok(events);
            }
        }
    }
}
