//! Constant-time comparison of secrets: the one helper every check of a password
//! digest, SCRAM proof or signature, channel binding or admin token goes through, in
//! this crate and in the gateway.
//!
//! Built on `subtle`, whose comparison the optimiser cannot turn back into an early
//! exit. The time taken depends only on the lengths, which are public (a hash output
//! size, or the length of a configured token).

use subtle::ConstantTimeEq;

/// True when `a` and `b` are equal, compared in time that depends only on their
/// lengths. Different lengths compare unequal.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equal_unequal_and_different_lengths() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
        assert!(!ct_eq(b"", b"a"));
    }
}
