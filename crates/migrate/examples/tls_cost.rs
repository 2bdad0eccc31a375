//! What mutual TLS costs the engine's throughput: migrates the same idle
//! in-memory fake VM over loopback, plain and inside TLS in turn, and
//! prints the medians and their ratio (docs/BENCHMARKS.md).
//!
//! cargo run -p migrate --example tls_cost -- [MiB] [reps]

use std::net::TcpListener;
use std::time::Duration;

use migrate::fake::{FakeFactory, FakeSpec, FakeVm, first_difference};
use migrate::{DestOptions, DestinationVm, Secret, SourceOptions, SourceVm, accept_one, migrate};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One migration; wire bytes per second over the whole migration.
fn once(mib: u64, tls: Option<&tls::Credentials>) -> Result<f64, Error> {
    let secret = Secret::from_bytes(b"tls cost example secret, 32 B!!!").ok_or("secret")?;
    let mut spec = FakeSpec::new(mib);
    spec.prefill_pages = mib * 256;
    spec.writes_per_sec = 0;
    let mut vm = FakeVm::new(spec)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut dest_opts = DestOptions::new(secret.clone(), 64 << 30);
    dest_opts.tls = tls.cloned();
    let dest = std::thread::spawn(move || {
        accept_one(listener, &mut FakeFactory::default(), &dest_opts).map_err(|e| e.to_string())
    });
    let mut opts = SourceOptions::new(
        secret,
        migrate::DEFAULT_STRATEGY
            .parse::<migrate::StrategyKind>()?
            .build(),
    );
    opts.tls = tls.cloned();
    let report = migrate(&mut vm, &addr.to_string(), opts).map_err(|f| f.error.to_string())?;
    let received = dest.join().map_err(|_| "destination panicked")??;
    let regions = vm.config().regions;
    if let Some(gpa) = first_difference(vm.memory(), received.vm.memory(), &regions) {
        return Err(format!("memory differs at {gpa:#x}").into());
    }
    received.vm.discard();
    Ok(report.bytes_sent as f64 / (report.total_time_ms / 1000.0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: u64 = args.first().map_or(Ok(512), |a| a.parse())?;
    let reps: usize = args.get(1).map_or(Ok(5), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("ferry-tls-cost-{}", std::process::id()));
    tls::pki::init(&dir, &["a".into()])?;
    let creds = tls::Credentials::load(&dir.join("a"))?;
    let (mut plain, mut secure) = (Vec::new(), Vec::new());
    // Alternate, so drifts of the machine's load hit both alike.
    for rep in 0..reps {
        plain.push(once(mib, None)?);
        secure.push(once(mib, Some(&creds))?);
        eprintln!(
            "rep {}: plain {:.0} MB/s, tls {:.0} MB/s",
            rep + 1,
            plain[rep] / 1e6,
            secure[rep] / 1e6
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (p, t) = (median(plain), median(secure));
    println!(
        "{mib} MiB idle fake VM over loopback, median of {reps}: plain {:.0} MB/s, TLS {:.0} MB/s, TLS/plain {:.2}",
        p / 1e6,
        t / 1e6,
        t / p
    );
    Ok(())
}
