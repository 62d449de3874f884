//! The operating-system side of runners (Unix: Linux and macOS): starting one with its socket
//! as file descriptor 3, finding that socket in the runner, and saying how a runner ended.

use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::RunnerLauncher;
use crate::error::{Error, Result};

/// The descriptor a runner finds its socket on.
const RUNNER_FD: i32 = 3;

/// Start a runner; its stdout goes to our stderr (engines may print there; our stdout is for
/// the front-end). It ignores SIGINT and SIGTERM (it ends when our socket closes) and is killed
/// if its handle is dropped.
pub fn spawn(launcher: &RunnerLauncher) -> Result<(Child, UnixStream)> {
    let failed = |e: std::io::Error| {
        Error::engine(
            "runner",
            format!("cannot start {}: {e}", launcher.program.display()),
        )
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(failed)?;
    let fd = theirs.as_raw_fd();
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
            if fd != RUNNER_FD && libc::dup2(fd, RUNNER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Keep descriptor 3 open across exec (dup2 clears close-on-exec; this covers fd == 3).
            if libc::fcntl(RUNNER_FD, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
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
    ours.set_nonblocking(true).map_err(failed)?;
    let ours = UnixStream::from_std(ours).map_err(failed)?;
    Ok((child, ours))
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
