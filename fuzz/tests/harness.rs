//! The fuzzer finds what it claims to find: a panic and a broken property are crashes (exit
//! status 1, input saved), an input past the deadline is a hang (status 3, input saved,
//! within a bounded time), and a clean target reports `crashes=0 hangs=0`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A scratch directory, removed when the test ends (also when it fails).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("ck-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("corpus")).unwrap();
    Scratch(d)
}

fn run(target: &str, dir: &Path, extra: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_clusterkit-fuzz"))
        .arg(target)
        .args(["--corpus", dir.join("corpus").to_str().unwrap()])
        .args(["--crashes", dir.join("crashes").to_str().unwrap()])
        .args(["--seed", "7"])
        .args(extra)
        .output()
        .unwrap();
    (out, started.elapsed())
}

fn saved(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir.join("crashes"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(prefix) && !n.ends_with(".txt")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_panic_is_a_saved_crash() {
    let dir = scratch("panic");
    let (out, _) = run("selftest_panic", &dir, &["--seconds", "0.5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("CRASH: panic: "), "{stdout}");
    assert!(!stdout.contains("crashes=0"), "{stdout}");
    assert!(saved(&dir, "selftest_panic-crash-") >= 1, "{stdout}");
}

#[test]
fn a_broken_property_is_a_saved_crash() {
    let dir = scratch("bug");
    let (out, _) = run("selftest_bug", &dir, &["--seconds", "0.5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("self-test property"), "{stdout}");
    assert!(saved(&dir, "selftest_bug-crash-") >= 1, "{stdout}");
}

#[test]
fn a_hang_ends_the_run_within_the_deadline() {
    let dir = scratch("hang");
    // The target sleeps 30 s per input; the watchdog must stop it after ~300 ms.
    let (out, took) = run(
        "selftest_hang",
        &dir,
        &["--seconds", "20", "--timeout-ms", "300"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("HANG") && stdout.contains("hangs=1"),
        "{stdout}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(saved(&dir, "selftest_hang-hang-"), 1, "{stdout}");
}

#[test]
fn a_clean_target_reports_zero() {
    let dir = scratch("clean");
    let (out, _) = run("session_id", &dir, &["--seconds", "0.3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("fuzz session_id: execs="))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    assert!(line.ends_with("crashes=0 hangs=0"), "{line}");
    let execs: u64 = line["fuzz session_id: execs=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(execs > 1000, "{line}");
    assert_eq!(saved(&dir, ""), 0);
}
