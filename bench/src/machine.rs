//! The machine a benchmark ran on, and the process's peak memory.

use serde::{Deserialize, Serialize};

/// Facts printed in a benchmark's header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs.
    pub logical_cores: usize,
    /// Physical cores.
    pub physical_cores: usize,
    /// 1-minute load average when the benchmark started.
    pub load_average: Option<f64>,
    /// `linux`, `macos`, ...
    pub os: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
}

impl Machine {
    /// This machine, now.
    pub fn current() -> Machine {
        Machine {
            cpu: cpu_name().unwrap_or_else(|| "unknown".into()),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            physical_cores: num_cpus::get_physical(),
            load_average: load_average(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        }
    }

    /// A warning when other work competes for the CPU (load above half the cores).
    pub fn busy_warning(&self) -> Option<String> {
        let load = self.load_average?;
        (load > self.logical_cores as f64 * 0.5).then(|| {
            format!(
                "the machine is busy (load average {load:.2} on {} logical cores): \
                 figures may be low and noisy",
                self.logical_cores
            )
        })
    }
}

fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

fn load_average() -> Option<f64> {
    let mut loads = [0f64; 3];
    // SAFETY: getloadavg writes at most the given count into the buffer.
    let n = unsafe { libc::getloadavg(loads.as_mut_ptr(), 3) };
    (n >= 1).then_some(loads[0])
}

/// Peak resident memory of this process so far.
pub fn peak_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let max = u64::try_from(usage.ru_maxrss).ok()?;
    // Linux reports kilobytes, macOS bytes.
    Some(if cfg!(target_os = "macos") {
        max
    } else {
        max * 1024
    })
}
