//! clusterkit errors → JavaScript `Error`s. The native layer puts the stable kind in front of
//! the message (`[invalid_argument] ...`); index.js moves it to `err.code` (see errors.js).

/// The napi error for a clusterkit error: `[<kind>] <message>`. Messages never carry secrets
/// (the core redacts them).
pub(crate) fn to_napi(e: clusterkit::Error) -> napi::Error {
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("[{}] {}", e.kind().as_str(), e),
    )
}

/// An `invalid_argument` error naming `field`.
pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> napi::Error {
    to_napi(clusterkit::Error::invalid(field, message.to_string()))
}

/// `Result` with the error translated.
pub(crate) trait OrNapi<T> {
    fn or_napi(self) -> napi::Result<T>;
}

impl<T> OrNapi<T> for clusterkit::Result<T> {
    fn or_napi(self) -> napi::Result<T> {
        self.map_err(to_napi)
    }
}

/// Milliseconds from JavaScript (a number) as a Duration; `field` names it in the error.
pub(crate) fn ms(field: &str, v: f64) -> napi::Result<std::time::Duration> {
    if !v.is_finite() || v < 0.0 {
        return Err(invalid(
            field,
            "must be a finite number of milliseconds >= 0",
        ));
    }
    if v > 9.0e15 {
        return Err(invalid(field, "is too large"));
    }
    Ok(std::time::Duration::from_micros((v * 1000.0).round() as u64))
}
