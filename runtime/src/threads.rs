//! CPU thread defaults shared by engines.

/// Threads to use when none are configured: the machine's physical cores.
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}
