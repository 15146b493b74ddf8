//! The blocking facade keeps working in a child process after fork() (PHP-FPM, Python
//! multiprocessing). One test per binary: forking a process with many threads is best kept
//! away from other tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use clusterkit::blocking;

#[test]
fn runtime_is_recreated_in_a_forked_child() {
    // Use the runtime in the parent first, so the child inherits a started one.
    let parent_rt = blocking::runtime().unwrap();
    let v = blocking::block_on(async {
        let h = tokio::spawn(async { 20 });
        h.await.unwrap() + 1
    })
    .unwrap();
    assert_eq!(v, 21);

    // SAFETY: fork() in a test process; the child only runs the code below and _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            let rt = blocking::runtime().unwrap();
            let fresh = !std::sync::Arc::ptr_eq(&rt, &parent_rt);
            let v = blocking::block_on(async {
                let hs: Vec<_> = (0..8)
                    .map(|i| {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            i
                        })
                    })
                    .collect();
                let mut sum = 0;
                for h in hs {
                    sum += h.await.unwrap();
                }
                sum
            })
            .unwrap();
            fresh && v == 28
        })
        .unwrap_or(false);
        // SAFETY: leave the child without running the test harness's exit path.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status),
        "child did not exit normally: {status}"
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child's runtime did not work"
    );

    // The parent's runtime is untouched.
    assert_eq!(blocking::block_on(async { 2 }).unwrap(), 2);
}
