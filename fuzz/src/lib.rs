//! Fuzzing on stable Rust, offline: every parser of untrusted bytes in memd
//! (`memd_server::fuzzing::TARGETS`) is fed its seeds (valid examples and saved regression
//! inputs) mutated at random: bit flips, byte and block edits, insertions of boundary bytes
//! and awkward text, splices of two inputs. Not coverage-guided (the coverage-guided tools
//! need a nightly compiler or an LLVM matching rustc's), so campaigns run many executions.
//! A panic is a crash: its input is saved under `fuzz/crashes/` for a regression test.

pub mod seeds;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

pub use memd_server::fuzzing::TARGETS;

/// Bytes and strings that parsers tend to trip on.
const AWKWARD: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xed\xa0\x80",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"/",
    b"..",
    b"%",
    b"%2F",
    b"*",
    b"?",
    b"{actorId}",
    b"{sessionId}",
    b"{memoryStrategyId}",
    b"{unknown}",
    b"-",
    b"+",
    b"e999",
    b"0x",
    b"9999999999999999999999",
    b"-9223372036854775808",
    b"T",
    b"Z",
    b"2026-02-30T25:61:61Z",
    b"=",
    b";",
    b",",
    b"\n",
    b"\r\n",
    b"\t",
    b" ",
    b"\xef\xbb\xbf",
];

/// One to eight stacked mutations of `input` (sometimes spliced with `other`).
pub fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = data.len();
        match rng.random_range(0..10) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = rng.random();
            }
            2 => {
                let at = rng.random_range(0..=len);
                let bytes: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let start = rng.random_range(0..len);
                let end = rng.random_range(start..=len.min(start + 64));
                data.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.random_range(0..len);
                let end = rng.random_range(start..=len.min(start + 64));
                let block = data[start..end].to_vec();
                let at = rng.random_range(0..=len);
                let most = if rng.random_bool(0.1) { 512 } else { 4 };
                let times = rng.random_range(1..=most);
                for _ in 0..times {
                    data.splice(at..at, block.iter().copied());
                }
            }
            5 | 6 => {
                let at = rng.random_range(0..=len);
                let awkward = AWKWARD[rng.random_range(0..AWKWARD.len())];
                data.splice(at..at, awkward.iter().copied());
            }
            7 if !other.is_empty() => {
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            8 if len > 0 => data.truncate(rng.random_range(0..len)),
            _ => {
                // A varint-sized length or tag in protobuf: the boundary values.
                let at = rng.random_range(0..=len);
                let value: &[u8] = match rng.random_range(0..4) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    1 => &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                    2 => &[0x7f],
                    _ => &[0x00],
                };
                data.splice(at..at, value.iter().copied());
            }
        }
    }
    data
}

/// A crash: the input and the panic's message.
#[derive(Debug, Clone)]
pub struct Crash {
    pub input: Vec<u8>,
    pub message: String,
}

/// What a campaign on one target did.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub target: &'static str,
    pub executions: u64,
    pub elapsed: Duration,
    pub crashes: Vec<Crash>,
}

/// Runs `target` on its seeds, then on `runs` mutated inputs (or until `deadline`),
/// catching panics; stops collecting after 20 distinct crashes.
pub fn campaign(
    target: &'static str,
    entry: fn(&[u8]),
    runs: u64,
    seed: u64,
    deadline: Option<Duration>,
) -> Campaign {
    let seeds = seeds::seeds(target);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut crashes: Vec<Crash> = Vec::new();
    let mut executions = 0u64;
    let run_one = |input: Vec<u8>, crashes: &mut Vec<Crash>| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            if crashes.len() < 20 && !crashes.iter().any(|c| c.message == message) {
                crashes.push(Crash { input, message });
            }
        }
    };
    for seed_input in &seeds {
        run_one(seed_input.clone(), &mut crashes);
        executions += 1;
    }
    // Grown inputs stay small enough to keep executions fast.
    const MAX_INPUT: usize = 64 * 1024;
    while executions < runs {
        if deadline.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let base = &seeds[rng.random_range(0..seeds.len())];
        let other = &seeds[rng.random_range(0..seeds.len())];
        let mut input = mutate(&mut rng, base, other);
        input.truncate(MAX_INPUT);
        run_one(input, &mut crashes);
        executions += 1;
    }
    Campaign {
        target,
        executions,
        elapsed: started.elapsed(),
        crashes,
    }
}

/// Silences the default panic message while fuzzing (crashes are reported with their
/// input instead).
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI's share of fuzzing: every target on its seeds and saved regression inputs, then
    /// 20,000 mutated inputs each (at most 8 s per target in a debug build: the extractor
    /// runs ~200 a second there). A crash fails the test with the input to reproduce it.
    #[test]
    fn every_target_survives_its_seeds_and_mutations() {
        let runs: u64 = std::env::var("MEMD_FUZZ_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        for &(name, entry) in TARGETS {
            let campaign = campaign(name, entry, runs, 0x6d656d64, Some(Duration::from_secs(8)));
            assert!(
                campaign.crashes.is_empty(),
                "{name} crashed: {:?}",
                campaign
                    .crashes
                    .iter()
                    .map(|c| (&c.message, String::from_utf8_lossy(&c.input)))
                    .collect::<Vec<_>>()
            );
            assert!(campaign.executions >= runs.min(200), "{name}: {campaign:?}");
        }
    }

    #[test]
    fn mutations_change_inputs_and_a_panicking_target_is_caught() {
        let mut rng = StdRng::seed_from_u64(1);
        let seed = b"hello world".to_vec();
        let changed = (0..100)
            .filter(|_| mutate(&mut rng, &seed, b"xyz") != seed)
            .count();
        assert!(
            changed > 90,
            "only {changed} of 100 mutations changed the input"
        );
        fn fragile(data: &[u8]) {
            assert!(!data.contains(&0xff), "found 0xff");
        }
        let campaign = campaign("none", fragile, 5_000, 3, None);
        assert_eq!(campaign.crashes.len(), 1);
        assert!(campaign.crashes[0].input.contains(&0xff));
    }
}
