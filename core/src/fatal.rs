//! The last thing an engine says: an engine whose native library is about to end the process
//! (a failed assertion, a lost worker) reports why here, and whoever outlives the process hears
//! it through the reporter registered at start (a runner's serving process, which fails the
//! requests in flight with it). Engines need not know whether they run in a runner.

use std::sync::OnceLock;

static REPORTER: OnceLock<fn(&str)> = OnceLock::new();

/// Register where [`report`] sends its message (once per process; later calls are ignored).
pub fn set_reporter(reporter: fn(&str)) {
    let _ = REPORTER.set(reporter);
}

/// Report why the process is about to end. Safe to call from any thread, from an abort hook;
/// it does not allocate. Without a registered reporter it does nothing.
pub fn report(message: &str) {
    if let Some(reporter) = REPORTER.get() {
        reporter(message);
    }
}
