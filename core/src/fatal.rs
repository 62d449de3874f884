//! The last thing an engine says: an engine whose native library is about to end the process
//! (a failed assertion, a lost worker) reports why here, and the runtime passes it on to
//! whoever outlives the process (a runner's serving process, which fails the requests in flight
//! with it). Engines need not know whether they run in a runner.

/// Report why the process is about to end. Safe to call from any thread, from an abort hook;
/// it does not allocate.
pub fn report(message: &str) {
    crate::runner::process::write_last_words(message);
}
