//! Forking from a test without ever hanging the suite: the child runs a closure and leaves
//! with `_exit(code)`; the parent waits with `WNOHANG` polling until a deadline, then
//! SIGKILLs the child and fails. Use from a test file with `mod fork_util;`.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `_exit(code)` (or a normal exit).
    Exited(i32),
    /// Killed by this signal (not by us).
    Signalled(i32),
    /// Still running at the deadline: killed with SIGKILL and reaped.
    TimedOut,
}

/// Forks; the child runs `child` (a panic counts as exit code 101) and `_exit`s with its
/// result; the parent returns the child's pid. Panics if fork fails.
pub fn spawn_child(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork() in a test process; the child only runs `child` and _exit()s, never
    // returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: leave the child without running the harness's exit path.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for `pid` until `deadline` from now, polling with `WNOHANG` (every 1 ms, then every
/// 10 ms); on the deadline the child is SIGKILLed and reaped and `TimedOut` is returned.
pub fn wait_child(pid: libc::pid_t, deadline: Duration) -> Outcome {
    let started = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return Outcome::Exited(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Outcome::Signalled(libc::WTERMSIG(status));
            }
            continue; // stopped/continued: keep waiting
        }
        assert!(
            r == 0,
            "waitpid({pid}) failed: {}",
            std::io::Error::last_os_error()
        );
        if started.elapsed() >= deadline {
            // SAFETY: SIGKILL to our own, not yet reaped child; then reap it (blocking is
            // fine: SIGKILL cannot be ignored).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Outcome::TimedOut;
        }
        let pause = if started.elapsed() < Duration::from_millis(50) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        std::thread::sleep(pause);
    }
}

/// Forks, runs `child` in the child, and returns its exit code; fails the test (never hangs)
/// if the child is still running after `deadline` or dies from a signal.
pub fn run_in_child(deadline: Duration, child: impl FnOnce() -> i32) -> i32 {
    let pid = spawn_child(child);
    match wait_child(pid, deadline) {
        Outcome::Exited(code) => code,
        Outcome::Signalled(sig) => panic!("the forked child {pid} died from signal {sig}"),
        Outcome::TimedOut => {
            panic!("the forked child {pid} did not finish within {deadline:?} (deadlock?); killed")
        }
    }
}
