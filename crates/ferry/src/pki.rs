//! `ferry pki init`: the cluster's CA and one certificate per host
//! (`tls::pki`).

use std::path::{Path, PathBuf};

/// Arguments of `ferry pki`.
#[derive(Debug, clap::Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create a cluster CA and a certificate and key for each host (DIR/HOST is that host's --tls-dir).
    Init(InitArgs),
}

/// Arguments of `ferry pki init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Folder to write into (created if missing); nothing in it is ever overwritten.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Host names, comma separated (lowercase letters, digits and '-').
    #[arg(long, value_name = "NAMES", value_delimiter = ',', required = true)]
    pub hosts: Vec<String>,
}

pub fn run(args: &PkiArgs) -> anyhow::Result<i32> {
    match &args.command {
        PkiCommand::Init(a) => {
            let dirs = tls::pki::init(&a.dir, &a.hosts)?;
            println!(
                "cluster CA: {} (its key {} must stay off the hosts)",
                a.dir.join(tls::pki::CA_CERT).display(),
                a.dir.join(tls::pki::CA_KEY).display()
            );
            for (h, d) in a.hosts.iter().zip(dirs) {
                println!("host {h}: --tls-dir {}", d.display());
            }
            Ok(crate::exit::OK)
        }
    }
}

/// The etcd client's TLS files in a host's `--tls-dir`: the cluster CA
/// (which must also have signed etcd's server certificate) and the host's
/// own certificate and key.
pub fn etcd_files(dir: &Path) -> store::TlsFiles {
    store::TlsFiles {
        ca: dir.join(tls::pki::CA_CERT),
        cert: dir.join(tls::pki::CERT),
        key: dir.join(tls::pki::KEY),
    }
}
