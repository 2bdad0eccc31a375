//! Migrates an in-memory fake VM over loopback TCP and prints the report:
//! a quick look at the engine's behaviour and throughput without KVM.
//!
//! cargo run --release -p migrate --example loopback -- [MiB] [strategy] [writes/s] [bandwidth|unlimited] [prefill-fraction] [hint|nohint]

use std::net::TcpListener;
use std::time::Duration;

use migrate::DestinationVm;
use migrate::fake::{FakeFactory, FakeSpec, FakeVm, first_difference};
use migrate::{DestOptions, Secret, SourceOptions, SourceVm, StrategyKind, accept_one, migrate};
use units::Bandwidth;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let mib: u64 = arg(0, "256").parse()?;
    let strategy = arg(1, migrate::DEFAULT_STRATEGY);
    let writes: u64 = arg(2, "5000").parse()?;
    let bw = arg(3, "unlimited");
    let prefill: f64 = arg(4, "1.0").parse()?;
    let hint = arg(5, "hint") == "hint";

    let secret = Secret::from_bytes(b"loopback example secret, 32 B!!!").ok_or("secret")?;
    let mut spec = FakeSpec::new(mib);
    spec.prefill_pages = (mib as f64 * 256.0 * prefill) as u64;
    spec.writes_per_sec = writes;
    spec.nonzero_hint = hint;
    spec.working_set_pages = (mib * 256 / 8).max(1);
    let mut vm = FakeVm::new(spec)?;
    std::thread::sleep(Duration::from_millis(200));

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let dest_secret = secret.clone();
    let dest = std::thread::spawn(move || {
        let mut factory = FakeFactory::default();
        accept_one(
            listener,
            &mut factory,
            &DestOptions::new(dest_secret, 64 << 30),
        )
    });
    let mut opts = SourceOptions::new(secret, strategy.parse::<StrategyKind>()?.build());
    if bw != "unlimited" {
        opts.max_bandwidth = Some(Bandwidth::parse(&bw)?);
    }
    let report = match migrate(&mut vm, &addr.to_string(), opts) {
        Ok(r) => r,
        Err(f) => {
            eprintln!("{}", f.report);
            return Err(f.error.into());
        }
    };
    let received = dest.join().map_err(|_| "destination panicked")??;
    println!("{report}");
    let regions = vm.config().regions;
    match first_difference(vm.memory(), received.vm.memory(), &regions) {
        None => println!("destination memory identical to the source's at pause"),
        Some(gpa) => println!("MISMATCH at {gpa:#x}"),
    }
    let secs = report.total_time_ms / 1000.0;
    println!(
        "throughput: {:.2} GB/s of wire bytes over the whole migration",
        report.bytes_sent as f64 / secs / 1e9
    );
    Ok(())
}
