//! The operating-system side of runners (Unix: Linux and macOS): starting one with its socket
//! as file descriptor 3 and a pipe for its last words (an engine's fatal error message) as
//! descriptor 4, finding those in the runner, and saying how a runner ended.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::RunnerLauncher;
use crate::error::{Error, Result};

/// The descriptor a runner finds its socket on.
const RUNNER_FD: i32 = 3;
/// The descriptor a runner writes its last words to (the write end of a pipe).
const LAST_WORDS_FD: i32 = 4;
/// Set in a runner once its socket was found: descriptor 4 is then its last-words pipe.
static IS_RUNNER: AtomicBool = AtomicBool::new(false);

/// The serving process's end of a runner's last-words pipe.
pub struct LastWords(std::fs::File);

impl LastWords {
    /// What the runner wrote before it ended (read once it has ended; empty: nothing).
    pub fn read(&mut self) -> String {
        let mut words = Vec::new();
        // Non-blocking: stops at the end of what was written, or at EOF.
        let _ = (&mut self.0).take(16 << 10).read_to_end(&mut words);
        String::from_utf8_lossy(&words).trim().to_string()
    }
}

/// In a runner: write `message` to the serving process as this runner's last words, for the
/// reason it gives when the runner dies (an engine calls this just before it aborts). Elsewhere
/// it does nothing. Safe to call from any thread; it does not allocate.
pub fn write_last_words(message: &str) {
    if !IS_RUNNER.load(Ordering::Relaxed) {
        return;
    }
    let mut rest = message.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes from a live slice to a descriptor this process was started with.
        let n = unsafe { libc::write(LAST_WORDS_FD, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
    // SAFETY: as above.
    unsafe { libc::write(LAST_WORDS_FD, b"\n".as_ptr().cast(), 1) };
}

/// Start a runner; its stdout goes to our stderr (engines may print there; our stdout is for
/// the front-end). It ignores SIGINT and SIGTERM (it ends when our socket closes) and is killed
/// if its handle is dropped.
pub fn spawn(launcher: &RunnerLauncher) -> Result<(Child, UnixStream, LastWords)> {
    let failed = |e: std::io::Error| {
        Error::engine(
            "runner",
            format!("cannot start {}: {e}", launcher.program.display()),
        )
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(failed)?;
    let (words_read, words_write) = pipe().map_err(failed)?;
    let fd = theirs.as_raw_fd();
    let words_fd = words_write.as_raw_fd();
    let mut command = Command::new(&launcher.program);
    command
        .args(&launcher.args)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl, setpgid, signal)
    // are made.
    unsafe {
        command.pre_exec(move || {
            // Copies above both targets first, so that neither dup2 overwrites the other source.
            for (source, target) in [(fd, RUNNER_FD), (words_fd, LAST_WORDS_FD)] {
                let copy = libc::fcntl(source, libc::F_DUPFD, 10);
                // dup2 clears close-on-exec: the target stays open across exec.
                if copy < 0 || libc::dup2(copy, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(copy);
            }
            // Ctrl-C in a terminal or a service manager's SIGTERM to the whole group is for the
            // server, which shuts down gracefully; the runner must keep serving the requests in
            // flight until the server closes its socket.
            libc::setpgid(0, 0);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = command.spawn().map_err(failed)?;
    drop(theirs);
    drop(words_write);
    ours.set_nonblocking(true).map_err(failed)?;
    let ours = UnixStream::from_std(ours).map_err(failed)?;
    Ok((child, ours, LastWords(std::fs::File::from(words_read))))
}

/// A close-on-exec pipe whose read end does not block: (read, write).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the two-element array on success; both descriptors are owned from here.
    let (read, write) = unsafe {
        if libc::pipe(fds.as_mut_ptr()) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    // SAFETY: fcntl on descriptors we own. (macOS has no pipe2: the flags are set afterwards.)
    unsafe {
        for fd in [read.as_raw_fd(), write.as_raw_fd()] {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let flags = libc::fcntl(read.as_raw_fd(), libc::F_GETFL);
        if libc::fcntl(read.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((read, write))
}

/// The socket a runner was started with.
pub fn runner_socket() -> Result<UnixStream> {
    let not_started = || {
        Error::Config(
            "`minerva runner` is started by `minerva serve` with a socket on descriptor 3; \
             it is not run by hand"
                .into(),
        )
    };
    // SAFETY: fstat only writes into the zeroed struct we own.
    let is_socket = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(RUNNER_FD, &mut stat) == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(not_started());
    }
    // SAFETY: descriptor 3 is an open socket handed to us by the serving process, owned from here.
    let socket = unsafe { std::os::unix::net::UnixStream::from_raw_fd(RUNNER_FD) };
    IS_RUNNER.store(true, Ordering::Relaxed);
    crate::fatal::set_reporter(write_last_words);
    socket.set_nonblocking(true).map_err(|_| not_started())?;
    UnixStream::from_std(socket).map_err(|_| not_started())
}

/// How a runner ended, e.g. `killed by signal 6 (SIGABRT)` or `exited with status 1`.
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        format!("killed by signal {signal} ({})", signal_name(signal))
    } else {
        match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "ended".into(),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_with_the_signal_name() {
        let abort = ExitStatus::from_raw(libc::SIGABRT);
        assert_eq!(describe_exit(abort), "killed by signal 6 (SIGABRT)");
        let code = ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_exit(code), "exited with status 3");
    }
}
