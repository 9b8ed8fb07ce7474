//! Object ids: 64 lowercase hex characters (256 random bits), as Docker, containerd
//! and CRI-O use, so kubelet and crictl can shorten them to any unique prefix.

use std::{fs::File, io::Read};

/// A fresh random id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True if `s` looks like a full id.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_unique() {
        let a = new_id();
        let b = new_id();
        assert!(is_full_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_full_id("ABC"));
        assert!(!is_full_id(&a.to_uppercase()));
    }
}
