//! Percent-encoding of text that goes into a URL, and decoding of what
//! comes out of one.

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

/// `s` with every `%XX` escape replaced by its byte; a `%` not followed by
/// two hex digits stays as it is, and bytes that are not UTF-8 become U+FFFD.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query or form value (`application/x-www-form-urlencoded`): `+` is a
/// space, then [`decode`]; `%2B` stays a `+`.
pub fn decode_form(s: &str) -> String {
    decode(&s.replace('+', " "))
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::{decode, decode_form, encode};

    #[test]
    fn only_letters_digits_and_the_kept_bytes_stay() {
        assert_eq!(
            encode("group/sub project~1", b"-_.~"),
            "group%2Fsub%20project~1"
        );
        assert_eq!(encode("/e/ä?x=1", b"/-_."), "/e/%C3%A4%3Fx%3D1");
    }

    #[test]
    fn escapes_decode_and_anything_else_stays() {
        for (raw, decoded) in [
            ("a%20b", "a b"),
            ("abc%2", "abc%2"),
            ("plain", "plain"),
            ("%e2%82", "\u{fffd}"),
            ("é%", "é%"),
        ] {
            assert_eq!(decode(raw), decoded, "{raw:?}");
        }
        assert_eq!(decode(&encode("/e/ä?x=1", b"/-_.")), "/e/ä?x=1");
    }

    #[test]
    fn form_values_read_plus_as_a_space_and_escapes_as_their_bytes() {
        let raw = ["a+b%2Fc%zz%4", "x%3A%3Ay", "1%2B1+%3D+2", "%+5"];
        assert_eq!(
            raw.map(decode_form),
            ["a b/c%zz%4", "x::y", "1+1 = 2", "% 5"]
        );
        assert_eq!(decode("a+b"), "a+b", "outside forms a + is a +");
    }
}
