//! CPU time and memory of this process, read from /proc (Linux), for benchmarks that run memd
//! in-process: the whole process, and each live thread by name, so that time can be put down
//! to memd's named threads (ONNX Runtime's threads carry the name of the thread that started
//! them, so the embedding thread's model threads count as its own).

use anyhow::Context;
use std::collections::BTreeMap;

fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// (name, user + system ticks) from a `stat` file: the name is in parentheses and may hold
/// spaces, so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state (0), ..., utime (11), stime (12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU seconds this process has used, every thread included (exited ones too).
pub fn process_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let (_, ticks) = parse_stat(&stat).context("parsing /proc/self/stat")?;
    Ok(ticks_to_seconds(ticks))
}

/// Each live thread's name and CPU ticks, by thread id.
pub fn threads() -> anyhow::Result<BTreeMap<u64, (String, u64)>> {
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may exit between the listing and the read.
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(parsed) = parse_stat(&stat)
        {
            threads.insert(tid, parsed);
        }
    }
    Ok(threads)
}

/// A thread name without its trailing number ("memd-embed-1" → "memd-embed"), so that pools
/// add up.
fn group(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit())
        .trim_end_matches(['-', '_', ':', '#'])
        .to_string()
}

/// CPU seconds each group of threads used between two [`threads`] readings (threads that
/// exited in between are missing: the process total has them).
pub fn cpu_by_group(
    before: &BTreeMap<u64, (String, u64)>,
    after: &BTreeMap<u64, (String, u64)>,
) -> Vec<(String, f64)> {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let earlier = before.get(tid).map_or(0, |(_, t)| *t);
        *groups.entry(group(name)).or_default() += ticks.saturating_sub(earlier);
    }
    let mut groups: Vec<(String, f64)> = groups
        .into_iter()
        .map(|(name, ticks)| (name, ticks_to_seconds(ticks)))
        .filter(|(_, seconds)| *seconds > 0.0)
        .collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups
}

/// Resident memory now and at its peak, in MiB (`VmRSS`, `VmHWM`).
pub fn rss_mib() -> anyhow::Result<(f64, f64)> {
    let status = read_status("self")?;
    Ok((mib(&status, "VmRSS:"), mib(&status, "VmHWM:")))
}

/// Another process's memory and threads, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    /// Resident memory, MiB (`VmRSS`).
    pub rss_mib: f64,
    /// Of which anonymous (heap, arenas, stacks): what the process allocated itself.
    pub anon_mib: f64,
    /// Of which file-backed (the binary, shared libraries, mapped index files): pages the
    /// kernel can drop and reload.
    pub file_mib: f64,
    pub threads: u64,
}

/// [`ProcessMemory`] of process `pid`.
pub fn process_memory(pid: u32) -> anyhow::Result<ProcessMemory> {
    let status = read_status(&pid.to_string())?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0);
    Ok(ProcessMemory {
        rss_mib: mib(&status, "VmRSS:"),
        anon_mib: mib(&status, "RssAnon:"),
        file_mib: mib(&status, "RssFile:"),
        threads,
    })
}

fn read_status(pid: &str) -> anyhow::Result<String> {
    let path = format!("/proc/{pid}/status");
    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
}

/// A `... kB` field of a status file in MiB (NaN when missing).
fn mib(status: &str, name: &str) -> f64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let stat = "4242 (tokio runtime) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0";
        assert_eq!(parse_stat(stat), Some(("tokio runtime".into(), 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn pools_group_under_one_name() {
        assert_eq!(group("memd-embed-12"), "memd-embed");
        assert_eq!(group("rocksdb:low0"), "rocksdb:low");
        assert_eq!(group("memd-embed-inde"), "memd-embed-inde");
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let busy: u64 = (0..5_000_000u64).map(|i| i % 7).sum();
        assert!(busy > 0);
        assert!(process_cpu_seconds().unwrap() > 0.0);
        let (now, peak) = rss_mib().unwrap();
        assert!(now > 0.0 && peak >= now, "{now} {peak}");
        assert!(!threads().unwrap().is_empty());
    }
}
