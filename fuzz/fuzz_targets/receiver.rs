//! Drives the destination's state machine (everything after the handshake)
//! with fuzzer-chosen message sequences against the in-memory fake VM. The
//! input is a little program whose ops emit well-formed frames (Start for a
//! small VM, rounds, Pages and ZeroPages anywhere in or out of guest memory,
//! State, Commit, Abort, the post-copy switch with a fuzzer-chosen set,
//! PostcopyEnd, the transaction messages (TxnPlan, TxnBegin, TxnEnd,
//! TxnAck), Drain and Drained, raw frames), so the fuzzer reaches deep
//! states (post-copy included: the fake's VMs accept it)
//! instead of stopping at checksums. Seeds: fuzz/seeds/receiver/, written
//! by `cargo test -p wire --test fuzz_seeds` (which knows these ops).
//! Invariants (checked in
//! `migrate::fuzz_session`): no panic; on error every created VM was
//! discarded and none was resumed unless it had switched to post-copy (which
//! runs before its memory arrived); never resumed before restore.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate::fake::fake_state;
use vmstate::VmConfig;
use wire::{
    Drain, MessageWriter, PostcopyEnd, RoundBegin, RoundEnd, Start, TxnAck, TxnBegin, TxnEnd,
    TxnPlan,
};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let Some(shape) = inp.byte() else { return };
    // 1 to 3 regions of 1 to 64 pages, the second one above 4 GiB.
    let nregions = 1 + (shape % 3) as u64;
    let mut regions = Vec::new();
    for i in 0..nregions {
        let pages = 1 + u64::from(inp.byte().unwrap_or(1) % 64);
        let start = [0u64, 1 << 32, 1 << 33][i as usize];
        regions.push((start, pages * 4096));
    }
    let memory_bytes = regions.iter().map(|r| r.1).sum();
    let config = VmConfig {
        memory_bytes,
        vcpus: 1 + u32::from(shape >> 6),
        regions: regions.clone(),
        cmdline: String::new(),
        kernel: "fuzz".into(),
        tsc_khz: 1,
    };
    let mut stream = Vec::new();
    let mut w = MessageWriter::new(&mut stream);
    let _ = w.start(&Start {
        migration_id: 1,
        page_size: 4096,
        flags: 0,
        config: config.clone(),
    });
    let mut round = 0u32;
    let page = vec![0xa5u8; 4096 * 4];
    while let Some(op) = inp.byte() {
        let pick_gpa = |inp: &mut Input<'_>| -> u64 {
            let r = regions[inp.byte().unwrap_or(0) as usize % regions.len()];
            // Mostly inside, sometimes just past the end or unaligned.
            let off = u64::from(inp.u16().unwrap_or(0)) * 4096 % (r.1 + 8192);
            r.0 + off + u64::from(op >> 7)
        };
        let _ = match op & 0x0f {
            0 => {
                let kind = inp.byte().unwrap_or(0);
                let len = inp.byte().unwrap_or(0) as usize;
                let payload = inp.bytes(len).to_vec();
                let mut raw = Vec::new();
                let _ = vmstate::FrameWriter::new(&mut raw).write_frame(kind, 0, &[&payload]);
                drop(w);
                stream.extend_from_slice(&raw);
                w = MessageWriter::new(&mut stream);
                Ok(())
            }
            1 => {
                round += 1;
                w.round_begin(&RoundBegin {
                    round,
                    flags: u32::from(op >> 4 & 1),
                    pages: 0,
                })
            }
            2 => {
                let gpa = pick_gpa(&mut inp);
                let n = 1 + (op >> 4 & 3) as usize;
                w.pages(gpa, &page[..n * 4096])
            }
            3 => {
                let gpa = pick_gpa(&mut inp);
                let count = 1 + u64::from(op >> 4);
                w.zero_pages(&[(gpa, count)])
            }
            4 => w.round_end(&RoundEnd {
                round,
                pages: 0,
                zero_pages: 0,
            }),
            5 => w.state(&fake_state(&config, b"fuzz".to_vec())),
            6 => w.commit(if op >> 4 == 0 { 1 } else { 2 }),
            7 => w.abort(wire::AbortCode::Cancelled, "fuzz"),
            8 => w.ready(),
            9 => {
                // A set over the index space (64-page aligned regions),
                // sometimes one word short or long.
                let words = regions.len() + usize::from(op >> 6) % 3;
                let words = words.saturating_sub(usize::from(op >> 6 == 3));
                let set: Vec<u64> = (0..words)
                    .map(|_| u64::from(inp.u16().unwrap_or(0)) * 0x0001_0001_0001_0001)
                    .collect();
                // Bit 4: with a lease (transactions need one).
                let lease_ns = u64::from(op >> 4 & 1) * 500_000_000;
                w.postcopy_begin(&set, lease_ns)
            }
            10 => w.postcopy_end(&PostcopyEnd {
                pages: u64::from(inp.byte().unwrap_or(0)),
                zero_pages: u64::from(op >> 4),
            }),
            11 => w.txn_plan(&TxnPlan {
                interval_ns: u64::from(inp.u16().unwrap_or(0)) * 1000,
            }),
            12 => w.txn_begin(&TxnBegin {
                seq: u64::from(op >> 4),
            }),
            13 => w.txn_end(&TxnEnd {
                seq: u64::from(op >> 4),
                pages: u64::from(inp.byte().unwrap_or(0)),
                zero_pages: u64::from(inp.byte().unwrap_or(0)),
            }),
            14 => w.txn_ack(&TxnAck {
                seq: u64::from(op >> 4),
            }),
            15 => {
                let d = Drain {
                    seq: u64::from(op >> 4 & 7),
                };
                if op >> 7 == 0 {
                    w.drain(&d)
                } else {
                    w.drained(&d)
                }
            }
            _ => Ok(()),
        };
    }
    drop(w);
    let _ = migrate::fuzz_session(&stream, 1 << 20);
});
