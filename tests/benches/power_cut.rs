//! Power cuts during write load (issue 12): `cargo bench -p sextant-tests
//! --bench power_cut` (also run by `cargo xtask bench`). For each durability
//! mode, `SEXTANT_POWER_CUT_CYCLES` cycles (default 100) of: the real server
//! on the power-cut VFS, 8 concurrent issuers over HTTP, the power cut at a
//! random write or sync, then every acknowledged command looked up in what
//! the disk kept. Prints one table.

use sextant_tests::power_cut::{random_in, run_cycle};

fn main() {
    let cycles: usize = std::env::var("SEXTANT_POWER_CUT_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_power-cut-server"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("| durability | cycles | power cut by the VFS | cycles with a violation | acknowledged | stored events | first violation |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for mode in ["full", "normal"] {
        let (mut cut, mut failed, mut acknowledged, mut stored) = (0, 0, 0, 0);
        let mut first = String::new();
        for cycle in 0..cycles {
            let ops = random_in(20..3000);
            let report = runtime
                .block_on(run_cycle(binary, mode, ops, 8))
                .expect("power-cut cycle");
            cut += usize::from(report.power_was_cut);
            acknowledged += report.acknowledged;
            stored += report.stored_events;
            if !report.violations.is_empty() {
                failed += 1;
                if first.is_empty() {
                    first = format!("cycle {cycle}, op {ops}: {}", report.violations[0]);
                }
            }
            eprintln!(
                "{mode} cycle {cycle}: cut at op {ops}, {} acknowledged, {} violations",
                report.acknowledged,
                report.violations.len()
            );
        }
        println!("| {mode} | {cycles} | {cut} | {failed} | {acknowledged} | {stored} | {first} |");
    }
}
