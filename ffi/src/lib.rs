//! C ABI of clusterkit. This crate grows with the C ABI issue; today it exports the version
//! only, so C callers can already check what they linked.

use std::ffi::c_char;

/// NUL-terminated version string of the library, e.g. `"0.1.0"`. Static: never free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn ck_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_matches_the_core() {
        let s = unsafe { std::ffi::CStr::from_ptr(super::ck_version()) };
        assert_eq!(s.to_str().unwrap(), clusterkit::VERSION);
    }
}
