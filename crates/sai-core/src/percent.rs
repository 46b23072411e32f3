//! Percent-encoding of text that goes into a URL.

/// `s` with every byte other than ASCII letters, digits and the bytes in
/// `keep` written as `%XX`.
pub fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn only_letters_digits_and_the_kept_bytes_stay() {
        assert_eq!(
            encode("group/sub project~1", b"-_.~"),
            "group%2Fsub%20project~1"
        );
        assert_eq!(encode("/e/ä?x=1", b"/-_."), "/e/%C3%A4%3Fx%3D1");
    }
}
