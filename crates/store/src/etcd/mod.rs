//! The etcd v3 backend, through the async `etcd-client` crate. A small
//! tokio runtime inside (one worker thread) runs its futures, so callers
//! see blocking calls, each bounded by the configured deadline.

mod convert;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    PutOptions, TlsOptions, TxnOp, TxnOpResponse,
};
use tokio::runtime::Runtime;

use crate::config::{EtcdConfig, TlsFiles};
use crate::error::{Result, StoreError};
use crate::store::Backend;
use crate::types::{Compare, Lease, LeaseId, Listing, Op, Revision, Txn, TxnOutcome};
use crate::watch::WatchStream;
use convert::{key_value, map_error};

/// How often an idle connection is probed, so a dead etcd is noticed by
/// watches and not only by the next call.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

pub(crate) struct EtcdBackend {
    rt: Arc<Runtime>,
    client: Client,
    deadline: Duration,
}

impl EtcdBackend {
    /// Builds the client; no request is made, so this succeeds while etcd
    /// is down (calls then fail within their deadline).
    pub(crate) fn connect(config: &EtcdConfig) -> Result<EtcdBackend> {
        let urls = config.urls()?;
        let deadline = config.deadline;
        // Each call's deadline is applied around it (see `call`), so a
        // slow answer is a Timeout, not a transport error.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(deadline)
            .with_keep_alive(KEEP_ALIVE, deadline)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::InvalidConfig(format!("cannot start a runtime: {e}")))?;
        let client = rt
            .block_on(async {
                tokio::time::timeout(deadline, Client::connect(urls, Some(options))).await
            })
            .map_err(|_| StoreError::Timeout {
                op: "connect",
                after: deadline,
            })?
            .map_err(|e| map_error("connect", e, None, deadline))?;
        Ok(EtcdBackend {
            rt: Arc::new(rt),
            client,
            deadline,
        })
    }

    /// Runs one request on the runtime, within the deadline.
    fn call<T, F, Fut>(&self, op: &'static str, lease: Option<LeaseId>, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let client = self.client.clone();
        let deadline = self.deadline;
        self.rt
            .block_on(async move { tokio::time::timeout(deadline, f(client)).await })
            .map_err(|_| StoreError::Timeout {
                op,
                after: deadline,
            })?
            .map_err(|e| map_error(op, e, lease, deadline))
    }
}

fn tls_options(files: &TlsFiles) -> Result<TlsOptions> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| StoreError::TlsFile {
            path: path.to_path_buf(),
            error,
        })
    };
    let ca = Certificate::from_pem(read(&files.ca)?);
    let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    Ok(TlsOptions::new().ca_certificate(ca).identity(identity))
}

impl Backend for EtcdBackend {
    fn range(&self, key: &str, prefix: bool) -> Result<Listing> {
        let options = match (prefix, key.is_empty()) {
            (false, _) => None,
            (true, false) => Some(GetOptions::new().with_prefix()),
            (true, true) => Some(GetOptions::new().with_all_keys()),
        };
        let key = key.to_owned();
        let mut resp = self.call(
            "get",
            None,
            |mut c| async move { c.get(key, options).await },
        )?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .take_kvs()
            .iter()
            .map(key_value)
            .collect::<Result<_>>()?;
        Ok(Listing { kvs, revision })
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        let lease = txn.then.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            _ => None,
        });
        let request = etcd_txn(txn);
        let resp = self.call("txn", lease, |mut c| async move { c.txn(request).await })?;
        let deleted = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                TxnOpResponse::Delete(d) => d.deleted(),
                _ => 0,
            })
            .sum();
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
            deleted,
        })
    }

    fn watch(
        &self,
        prefix: &str,
        from: Option<Revision>,
    ) -> Result<(Box<dyn WatchStream>, Revision)> {
        let (stream, first) = watch::EtcdWatch::start(self, prefix, from)?;
        Ok((Box::new(stream), first))
    }

    fn grant(&self, ttl_secs: i64) -> Result<Lease> {
        let resp = self.call("lease grant", None, |mut c| async move {
            c.lease_grant(ttl_secs, None).await
        })?;
        if !resp.error().is_empty() {
            return Err(StoreError::Rejected {
                op: "lease grant",
                reason: resp.error().to_owned(),
            });
        }
        Ok(Lease {
            id: LeaseId(resp.id()),
            ttl: Duration::from_secs(resp.ttl().max(0) as u64),
        })
    }

    fn keep_alive(&self, id: LeaseId) -> Result<()> {
        // One request and its answer; an expired lease answers TTL 0.
        self.call("lease keep-alive", Some(id), |mut c| async move {
            c.lease_keep_alive(id.0).await.map(drop)
        })
    }

    fn revoke(&self, id: LeaseId) -> Result<()> {
        self.call("lease revoke", Some(id), |mut c| async move {
            c.lease_revoke(id.0).await.map(drop)
        })
    }

    fn time_to_live(&self, id: LeaseId) -> Result<Option<Duration>> {
        let resp = self.call("lease ttl", Some(id), |mut c| async move {
            c.lease_time_to_live(id.0, None).await
        })?;
        Ok((resp.ttl() > 0).then(|| Duration::from_secs(resp.ttl() as u64)))
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }
}

fn etcd_txn(txn: &Txn) -> etcd_client::Txn {
    let when: Vec<etcd_client::Compare> = txn
        .when
        .iter()
        .map(|c| match c {
            Compare::ModRevision { key, revision } => {
                etcd_client::Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
            }
            Compare::CreateRevision { key, revision } => {
                etcd_client::Compare::create_revision(key.as_str(), CompareOp::Equal, *revision)
            }
        })
        .collect();
    let then: Vec<TxnOp> = txn
        .then
        .iter()
        .map(|op| match op {
            Op::Put { key, value, lease } => TxnOp::put(
                key.as_str(),
                value.as_slice(),
                lease.map(|l| PutOptions::new().with_lease(l.0)),
            ),
            Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            Op::DeletePrefix { prefix } => {
                TxnOp::delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
            }
        })
        .collect();
    etcd_client::Txn::new().when(when).and_then(then)
}
