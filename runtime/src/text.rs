//! Client input quoted in error messages and logs, kept short.

use std::borrow::Cow;

/// The most bytes of one client-supplied value an error message repeats. A 1 MiB pod
/// name must not come back as a 1 MiB gRPC status (or log line); ~100 bytes identify
/// the value.
pub const EXCERPT_BYTES: usize = 100;

/// `s` itself when short, else its first [`EXCERPT_BYTES`] (cut at a character
/// boundary) with an ellipsis and the full length.
///
/// ```
/// let long = "x".repeat(1 << 20);
/// assert!(crust_runtime::excerpt(&long).len() < 130);
/// assert_eq!(crust_runtime::excerpt("short"), "short");
/// ```
pub fn excerpt(s: &str) -> Cow<'_, str> {
    if s.len() <= EXCERPT_BYTES {
        return Cow::Borrowed(s);
    }
    let mut end = EXCERPT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_at_char_boundaries() {
        for (name, input, want_len_at_most) in [
            ("short is kept", "abc".to_string(), 3),
            (
                "exactly the bound is kept",
                "a".repeat(EXCERPT_BYTES),
                EXCERPT_BYTES,
            ),
            ("long ascii", "a".repeat(5000), EXCERPT_BYTES + 20),
            ("long multibyte", "é".repeat(5000), EXCERPT_BYTES + 20),
        ] {
            let got = excerpt(&input);
            assert!(got.len() <= want_len_at_most, "{name}: {} bytes", got.len());
            let kept = got.split('…').next().unwrap();
            assert!(input.starts_with(kept), "{name}: {got}");
        }
        assert!(excerpt(&"a".repeat(200)).ends_with("… (200 bytes)"));
    }
}
