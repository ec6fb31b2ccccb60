//! Lower-case hexadecimal of digests (audio checksums, fingerprints, paths).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The two lower-case hex digits of `b`.
fn digits(b: u8) -> [u8; 2] {
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]
}

/// `bytes` as lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.extend(digits(*b).map(char::from));
    }
    out
}

/// Whether `text` is `bytes` as lower-case hexadecimal (without building it).
pub fn is_hex_of(text: &str, bytes: &[u8]) -> bool {
    text.len() == bytes.len() * 2
        && text
            .as_bytes()
            .chunks_exact(2)
            .zip(bytes)
            .all(|(pair, b)| pair == digits(*b))
}
