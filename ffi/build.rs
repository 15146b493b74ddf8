//! Generates the C header with cbindgen (as a library, so it shares the build cache).
//!
//! The header goes to `<target>/<profile>/clusterkit.h`, next to `libclusterkit_ffi.so`;
//! `tests/c/run` compares it with the committed `include/clusterkit.h` (and `--bless` copies
//! it there). Generating into `OUT_DIR` and the profile directory keeps the source tree
//! untouched by builds.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let config = match cbindgen::Config::from_file(dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            println!("cargo:warning=cbindgen.toml: {e}");
            std::process::exit(1);
        }
    };
    let bindings = match cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            println!("cargo:warning=cbindgen failed: {e}");
            std::process::exit(1);
        }
    };
    let header = out.join("clusterkit.h");
    bindings.write_to_file(&header);
    // OUT_DIR is <target>/<profile>/build/clusterkit-ffi-<hash>/out.
    if let Some(profile_dir) = out.ancestors().nth(3) {
        copy_if_changed(&header, &profile_dir.join("clusterkit.h"));
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_default();
    if std::fs::read(to).ok().as_deref() != Some(new.as_slice()) {
        let _ = std::fs::write(to, new);
    }
}
