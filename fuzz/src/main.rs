//! `clusterkit-fuzz`: coverage-less mutation fuzzing of clusterkit on stable Rust.
//!
//! ```text
//! clusterkit-fuzz <target|all|list> [--seconds N] [--corpus DIR] [--crashes DIR]
//!                 [--seed N] [--timeout-ms N] [--grow]
//! ```
//!
//! Each target starts from its committed seed corpus (`<corpus>/<target>/`), then mutates
//! entries (bit flips, insertions, deletions, duplications, splices, tokens of the target's
//! grammar) for the time given. An input whose outcome signature was not seen before joins
//! the in-memory corpus (and, with `--grow`, the corpus directory). A panic anywhere (also
//! one caught inside the library, as `CK_INTERNAL`) or a broken property is a crash: the
//! input is saved under `<crashes>/<target>-<hash>` and fuzzing goes on. An input that runs
//! longer than `--timeout-ms` (default 2000) is a hang: a watchdog thread saves it and ends
//! the process with status 3.
//!
//! Output: one line per target, `fuzz <target>: execs=N ... crashes=N hangs=0`, and with
//! `all` a total line. The exit status is 1 when any crash was found.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod mutate;
mod targets;

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mutate::Rng;
use targets::{Outcome, Target, TARGETS};

/// Panics seen by the hook (in any thread: the library's runtime threads too).
static PANICS: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

struct Options {
    which: String,
    seconds: f64,
    corpus: PathBuf,
    crashes: PathBuf,
    seed: u64,
    timeout: Duration,
    grow: bool,
}

fn usage() -> String {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    format!(
        "usage: clusterkit-fuzz <target|all|list> [--seconds N] [--corpus DIR] [--crashes DIR] [--seed N] [--timeout-ms N] [--grow]\ntargets: {}",
        names.join(", ")
    )
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let which = args.next().ok_or_else(usage)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        which,
        seconds: 10.0,
        corpus: root.join("corpus"),
        crashes: root.join("crashes"),
        seed: 0,
        timeout: Duration::from_millis(2000),
        grow: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => {
                o.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?;
                if !(o.seconds.is_finite() && o.seconds >= 0.0 && o.seconds <= 86_400.0) {
                    return Err("--seconds must be 0..=86400".into());
                }
            }
            "--corpus" => o.corpus = PathBuf::from(value()?),
            "--crashes" => o.crashes = PathBuf::from(value()?),
            "--seed" => o.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--timeout-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--timeout-ms: {e}"))?;
                o.timeout = Duration::from_millis(ms.clamp(10, 600_000));
            }
            "--grow" => o.grow = true,
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    if o.seed == 0 {
        o.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    Ok(o)
}

fn hash_of(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// What the watchdog watches: the running target, its input and when it started.
struct Running {
    target: Mutex<(&'static str, Vec<u8>)>,
    /// Milliseconds since `epoch` when the current input started; 0 when idle.
    started_ms: AtomicU64,
    epoch: Instant,
}

fn watchdog(running: Arc<Running>, timeout: Duration, crashes: PathBuf) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let started = running.started_ms.load(Ordering::Acquire);
        if started == 0 {
            continue;
        }
        let now = running.epoch.elapsed().as_millis() as u64;
        if now.saturating_sub(started) > timeout.as_millis() as u64 {
            let (name, input) = running
                .target
                .lock()
                .map(|g| (g.0, g.1.clone()))
                .unwrap_or(("?", Vec::new()));
            let path = save(&crashes, name, "hang", &input, "ran past the deadline");
            println!(
                "fuzz {name}: HANG: an input ran longer than {timeout:?}; saved to {}",
                path.display()
            );
            println!("fuzz {name}: crashes=0 hangs=1");
            std::process::exit(3);
        }
    });
}

fn save(dir: &Path, target: &str, kind: &str, input: &[u8], why: &str) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{target}-{kind}-{:016x}", hash_of(input)));
    let _ = std::fs::write(&path, input);
    let _ = std::fs::write(path.with_extension("txt"), why);
    path
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut out: Vec<Vec<u8>> = files
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}

struct Summary {
    execs: u64,
    crashes: u64,
    seeds: usize,
    kept: usize,
    signatures: usize,
    secs: f64,
}

/// Runs `input` once; `Err(why)` for a crash.
fn run_one(t: &Target, running: &Running, input: &[u8]) -> Result<u64, String> {
    if let Ok(mut g) = running.target.lock() {
        g.0 = t.name;
        g.1.clear();
        g.1.extend_from_slice(input);
    }
    let before = PANICS.load(Ordering::Acquire);
    running.started_ms.store(
        running.epoch.elapsed().as_millis().max(1) as u64,
        Ordering::Release,
    );
    let r = catch_unwind(AssertUnwindSafe(|| (t.run)(input)));
    running.started_ms.store(0, Ordering::Release);
    let panicked = PANICS.load(Ordering::Acquire) != before;
    let last = || LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default();
    match r {
        Err(_) => Err(format!("panic: {}", last())),
        Ok(_) if panicked => Err(format!("panic (caught inside the library): {}", last())),
        Ok(Outcome::Bug(why)) => Err(why),
        Ok(Outcome::Ok(sig)) => Ok(sig),
    }
}

fn fuzz(t: &Target, o: &Options, running: &Running, rng: &mut Rng) -> Summary {
    let dir = o.corpus.join(t.name);
    let seeds = load_corpus(&dir);
    let mut pool = seeds.clone();
    let mut signatures = HashSet::new();
    let mut crash_hashes = HashSet::new();
    let mut execs = 0u64;
    let mut kept = 0usize;
    let started = Instant::now();
    let record_crash = |input: &[u8], why: String, crash_hashes: &mut HashSet<u64>| {
        if crash_hashes.insert(hash_of(input)) {
            let path = save(&o.crashes, t.name, "crash", input, &why);
            println!(
                "fuzz {}: CRASH: {why} (saved to {})",
                t.name,
                path.display()
            );
        }
    };
    for s in &seeds {
        execs += 1;
        match run_one(t, running, s) {
            Ok(sig) => {
                signatures.insert(sig);
            }
            Err(why) => record_crash(s, why, &mut crash_hashes),
        }
    }
    let deadline = Duration::from_secs_f64(o.seconds);
    let mut input = Vec::with_capacity(t.max_len);
    while started.elapsed() < deadline {
        // A batch between clock reads.
        for _ in 0..64 {
            let parent = &pool[rng.below(pool.len())];
            let other = &pool[rng.below(pool.len())];
            input.clear();
            input.extend_from_slice(parent);
            mutate::mutate(rng, &mut input, other, t.dict, t.max_len);
            execs += 1;
            match run_one(t, running, &input) {
                Ok(sig) => {
                    if signatures.insert(sig) && pool.len() < 4096 {
                        pool.push(input.clone());
                        kept += 1;
                        if o.grow {
                            let _ = std::fs::create_dir_all(&dir);
                            let _ = std::fs::write(
                                dir.join(format!("grown-{:016x}", hash_of(&input))),
                                &input,
                            );
                        }
                    }
                }
                Err(why) => record_crash(&input, why, &mut crash_hashes),
            }
        }
    }
    Summary {
        execs,
        crashes: crash_hashes.len() as u64,
        seeds: seeds.len(),
        kept,
        signatures: signatures.len(),
        secs: started.elapsed().as_secs_f64(),
    }
}

fn real_main() -> Result<u64, String> {
    let o = parse_args()?;
    if o.which == "list" {
        for t in TARGETS {
            println!("{}", t.name);
        }
        return Ok(0);
    }
    let chosen: Vec<&Target> = if o.which == "all" {
        TARGETS.iter().collect()
    } else {
        let t = TARGETS
            .iter()
            .chain(targets::SELF_TESTS)
            .find(|t| t.name == o.which)
            .ok_or_else(|| format!("unknown target {:?}\n{}", o.which, usage()))?;
        vec![t]
    };
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut m) = LAST_PANIC.lock() {
            *m = info.to_string();
        }
    }));
    let running = Arc::new(Running {
        target: Mutex::new(("", Vec::new())),
        started_ms: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    watchdog(running.clone(), o.timeout, o.crashes.clone());
    println!(
        "fuzz: seed {} ({} s per target, {:?} per input)",
        o.seed, o.seconds, o.timeout
    );
    let mut rng = Rng::new(o.seed);
    let (mut execs, mut crashes) = (0u64, 0u64);
    for t in &chosen {
        let s = fuzz(t, &o, &running, &mut rng);
        println!(
            "fuzz {}: execs={} ({:.0}/s) seeds={} kept={} signatures={} crashes={} hangs=0",
            t.name,
            s.execs,
            s.execs as f64 / s.secs.max(1e-9),
            s.seeds,
            s.kept,
            s.signatures,
            s.crashes
        );
        execs += s.execs;
        crashes += s.crashes;
    }
    if chosen.len() > 1 {
        println!(
            "fuzz total: targets={} execs={execs} crashes={crashes} hangs=0",
            chosen.len()
        );
    }
    Ok(crashes)
}

fn main() -> ExitCode {
    // Deeply nested inputs recurse in the parsers: run on a thread with a large stack.
    let worker = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(256 << 20)
        .spawn(real_main);
    match worker.map(|h| h.join()) {
        Ok(Ok(Ok(0))) => ExitCode::SUCCESS,
        Ok(Ok(Ok(_))) => ExitCode::from(1),
        Ok(Ok(Err(msg))) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        _ => {
            eprintln!("the fuzzer itself failed");
            ExitCode::from(2)
        }
    }
}
