//! The process's own gauges, read from `/proc/self` at each scrape (Linux;
//! elsewhere they are left out): resident memory, CPU time, open files.

use ::metrics::{Unit, describe_gauge, gauge};

const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
const CPU_SECONDS: &str = "process_cpu_seconds_total";
const OPEN_FDS: &str = "process_open_fds";
const MAX_FDS: &str = "process_max_fds";

pub(super) fn describe() {
    describe_gauge!(
        RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident memory of this process"
    );
    describe_gauge!(
        CPU_SECONDS,
        Unit::Seconds,
        "CPU time this process has used (user and system)"
    );
    describe_gauge!(OPEN_FDS, "File descriptors this process has open");
    describe_gauge!(MAX_FDS, "The most file descriptors this process may open");
}

/// This process's resident memory, in bytes.
pub fn resident_bytes() -> Option<u64> {
    let pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// How many file descriptors this process has open.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

pub(super) fn scrape() {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    if let Some(resident) = resident_bytes() {
        gauge!(RESIDENT_MEMORY).set(resident as f64);
    }
    // Fields 14 and 15 (utime, stime), counted after the parenthesised name.
    if let Some(cpu) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        && ticks > 0.0
    {
        gauge!(CPU_SECONDS).set(cpu / ticks);
    }
    if let Some(open) = open_fds() {
        gauge!(OPEN_FDS).set(open as f64);
    }
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        gauge!(MAX_FDS).set(soft as f64);
    }
}
