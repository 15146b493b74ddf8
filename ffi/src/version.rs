//! Version of the library and of its ABI.

use std::ffi::c_char;

/// ABI version constants of this header. ck_abi_version() returns the library's
/// (major << 16) | minor. A caller accepts the library when
/// `ck_abi_version() >> 16 == CK_ABI_MAJOR && ck_abi_version() >= CK_ABI_VERSION`
/// (same major, minor at least the header's).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ck_abi {
    /// The ABI major version: bumped on every incompatible change (it is the soname's number).
    CK_ABI_MAJOR = 1,
    /// The full ABI version of this header: (major << 16) | minor.
    CK_ABI_VERSION = 0x0001_0002,
}

/// NUL-terminated version string of the library, e.g. "0.1.0". Static: never free it.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn ck_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the loaded library: (major << 16) | minor. Compare it with the ck_abi
/// constants of the header the caller was built with. Thread-safe.
#[no_mangle]
pub extern "C" fn ck_abi_version() -> u32 {
    ck_abi::CK_ABI_VERSION as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_core() {
        let s = unsafe { std::ffi::CStr::from_ptr(super::ck_version()) };
        assert_eq!(s.to_str().unwrap(), clusterkit::VERSION);
    }

    #[test]
    fn abi_version_has_the_major_in_the_high_half() {
        assert_eq!(ck_abi_version() >> 16, ck_abi::CK_ABI_MAJOR as u32);
    }
}
