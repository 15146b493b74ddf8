//! Generates the C header with cbindgen (as a library, so it shares the build cache).
//!
//! The header goes to `<target>/<profile>/clusterkit.h`, next to `libclusterkit_ffi.so`;
//! `tests/c/run` compares it with the committed `include/clusterkit.h` (and `--bless` copies
//! it there). Generating into `OUT_DIR` and the profile directory keeps the source tree
//! untouched by builds.
//!
//! The same run writes `clusterkit_php.h`, the header for PHP's FFI: identical declarations
//! (the ABI is the same), except that every *input* byte buffer `const uint8_t *` is declared
//! `const char *` — PHP passes a string to a `char *` parameter without copying it, but
//! would need a copy into an FFI buffer for `uint8_t *` — and without `#` lines. It is
//! committed as `bindings/php/resources/clusterkit.h` (checked by `tests/c/run` as well).

use std::path::{Path, PathBuf};

/// The ABI major version (`CK_ABI_MAJOR` in src/version.rs; `tests/c/run` checks they agree):
/// the shared library's soname is `libclusterkit.so.<major>`, so a program linked against
/// one major never loads another.
const ABI_MAJOR: u32 = 1;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libclusterkit.so.{ABI_MAJOR}");
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
    let php = out.join("clusterkit_php.h");
    let text = std::fs::read_to_string(&header).unwrap_or_default();
    if let Err(e) = std::fs::write(&php, php_variant(&text)) {
        println!("cargo:warning=cannot write {}: {e}", php.display());
        std::process::exit(1);
    }
    // OUT_DIR is <target>/<profile>/build/clusterkit-ffi-<hash>/out.
    if let Some(profile_dir) = out.ancestors().nth(3) {
        copy_if_changed(&header, &profile_dir.join("clusterkit.h"));
        copy_if_changed(&php, &profile_dir.join("clusterkit_php.h"));
    }
}

/// The PHP FFI variant of the C header (see the module comment).
fn php_variant(c: &str) -> String {
    let mut out = String::with_capacity(c.len());
    out.push_str(
        "/* PHP FFI variant of clusterkit.h, generated with it by ffi/build.rs: the same ABI,\n \
         * with input byte buffers declared `const char *` so PHP strings pass without a copy. */\n",
    );
    for line in c.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        out.push_str(&php_params(line));
        out.push('\n');
    }
    out
}

/// Rewrites `const uint8_t *name,` / `const uint8_t *name)` parameters (inputs) to
/// `const char *`; returns (`const uint8_t *ck_buf_data(`) and `const uint8_t **` outputs
/// are left alone.
fn php_params(line: &str) -> String {
    const FROM: &str = "const uint8_t *";
    let mut result = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(FROM) {
        let after = &rest[at + FROM.len()..];
        let ident_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let is_param =
            ident_len > 0 && matches!(after[ident_len..].chars().next(), Some(',' | ')'));
        result.push_str(&rest[..at]);
        result.push_str(if is_param { "const char *" } else { FROM });
        rest = after;
    }
    result.push_str(rest);
    result
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_default();
    if std::fs::read(to).ok().as_deref() != Some(new.as_slice()) {
        let _ = std::fs::write(to, new);
    }
}
