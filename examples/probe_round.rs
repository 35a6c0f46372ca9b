//! The cost of chain-co's probe rounds against a pool, as `bench/real-forest.sh` measures it
//! for real Forest daemons and for the simulator's `forest` profile side by side.
//!
//! `probe_round CONFIG ROUNDS LABEL`: probes the config's nodes ROUNDS times back to back (as
//! `run` would, finality and the daemons' own word every third round) and prints one markdown
//! row: round time p50 / p95 / max, and this process's CPU time per round. Nothing is applied.

use std::time::{Duration, Instant};

use chain_co::config::Config;

/// This process's user + system CPU time.
fn cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, rounds, label] = &args[..] else {
        eprintln!("usage: probe_round CONFIG ROUNDS LABEL");
        std::process::exit(2);
    };
    let rounds: usize = rounds.parse().expect("ROUNDS is a number");
    let text = std::fs::read_to_string(path).expect("read config");
    let config = Config::parse(&text, std::path::Path::new(path).parent().expect("dir"))
        .unwrap_or_else(|p| panic!("config: {p:?}"));
    let prober = config.prober().expect("prober");
    // The first round identifies the nodes: not counted.
    let first = prober.round().await;
    let ok = first
        .observations
        .iter()
        .filter(|o| o.result.is_ok())
        .count();
    let cpu0 = cpu();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let _ = prober.round().await;
        times.push(t.elapsed());
    }
    let per_round = (cpu() - cpu0) / rounds as u32;
    times.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!(
        "| {label} | {} ({ok} answering) | {rounds} | {} | {} | {} | {} |",
        config.nodes.len(),
        ms(pct(&times, 0.5)),
        ms(pct(&times, 0.95)),
        ms(*times.last().expect("rounds")),
        ms(per_round),
    );
}
