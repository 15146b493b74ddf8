//! `CLUSTERKIT_LOG` / `CLUSTERKIT_LOG_FILE` (core/src/log.rs): records as JSON lines in a
//! file per process, at the level asked, beside the binding buffer. Its own test binary: the
//! variables are read once per process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use clusterkit::blocking::block_on;
use clusterkit::Clusterkit;

#[test]
fn the_environment_sends_records_to_a_file_per_process() {
    let dir = std::env::temp_dir().join(format!("ck-log-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The test command runs every suite with these set: this binary sets its own.
    std::env::set_var("CLUSTERKIT_LOG", "debug");
    std::env::set_var(
        "CLUSTERKIT_LOG_FILE",
        dir.join("{pid}.jsonl").to_str().unwrap(),
    );
    let ck = Clusterkit::embedded().unwrap();
    assert_eq!(
        clusterkit::log::sink_level(),
        Some(clusterkit::log::Level::Debug)
    );
    // The binding buffer is separate: off, it keeps nothing.
    assert_eq!(clusterkit::log::level(), None);
    block_on(ck.cache().set(b"k", b"secret-value".to_vec(), None))
        .unwrap()
        .unwrap();
    let guard = block_on(ck.locks().acquire("job", Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let token = guard.token().to_string();
    block_on(guard.release()).unwrap().unwrap();
    assert!(clusterkit::log::drain(usize::MAX).is_empty());

    let path = dir.join(format!("{}.jsonl", std::process::id()));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"lock acquired"), "{text}");
    assert!(messages.contains(&"lock released"), "{text}");
    // Debug level: the cache's trace records are not written.
    assert!(!messages.contains(&"set"), "{text}");
    for r in &records {
        assert!(r["time_ms"].as_u64().unwrap() > 0, "{r}");
        assert!(r["fields"].is_object(), "{r}");
        assert_ne!(r["level"], "trace", "{r}");
    }
    assert!(
        !text.contains(&token) && !text.contains("secret-value"),
        "{text}"
    );
}
