//! What a server process costs, read from `/proc`: CPU time (utime + stime, in clock ticks)
//! and resident memory (VmRSS now, VmHWM the peak, which `clear_refs` can reset).

use anyhow::{Context, bail};

/// User + system CPU time of `pid` in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
}

fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else { bail!("stat has too few fields") };
    Ok(utime.parse::<u64>().context("utime")? + stime.parse::<u64>().context("stime")?)
}

/// CPU ticks of this very process (the load generator).
pub fn own_cpu_ticks() -> anyhow::Result<u64> {
    cpu_ticks(std::process::id())
}

/// A `Vm*` line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_status_kib(&status, key)
}

fn parse_status_kib(status: &str, key: &str) -> anyhow::Result<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(key)).with_context(|| format!("no {key} in status"))?;
    let value = line.split_whitespace().nth(1).with_context(|| format!("malformed {key} line"))?;
    value.parse().with_context(|| format!("malformed {key} value"))
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux ≥ 4.0), so the
/// next reading is the peak of one scenario. `false` when the kernel refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "4242 (tessera (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat).expect("ticks"), 300);
        let status = "Name:\ttessera\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM").expect("hwm"), 20480);
        assert_eq!(parse_status_kib(status, "VmRSS").expect("rss"), 10240);
        assert!(parse_status_kib(status, "VmSwap").is_err());
    }

    #[test]
    fn reads_this_process() {
        assert!(own_cpu_ticks().is_ok());
        assert!(status_kib(std::process::id(), "VmRSS").expect("rss") > 0);
    }
}
