//! What Swarm objects dockmaster makes are named and carry: a short stable hash for names
//! (the same on every machine and Rust release, unlike std's hasher), and the base64 the
//! Engine API carries a config's data in.

use base64::Engine as _;
use sha2::Digest as _;

/// The first `hex` hex digits of `s`'s SHA-256.
pub fn short_hash(s: &str, hex: usize) -> String {
    let digest = sha2::Sha256::digest(s.as_bytes());
    let mut out: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    out.truncate(hex);
    out
}

/// A config's data as the Engine API wants it (standard base64, padded).
pub fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The inverse of [`encode`]; None for anything that is not base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_pinned_and_the_data_round_trips() {
        assert_eq!(short_hash("", 8), "e3b0c442");
        assert_eq!(short_hash("foobar", 12), "c3ab8ff13720");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert_eq!(encode(b"foob"), "Zm9vYg==");
        assert_eq!(decode("Zm9v!"), None);
    }
}
