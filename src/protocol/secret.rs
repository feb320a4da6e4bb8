//! Bytes and text that hold credentials: zeroized when dropped, redacted in `Debug`. Pure.
//!
//! Decoded secrets, Basic header values and bodies that carry `client_secret` are held in these
//! types, so that no `{:?}` (a log line, a panic message) prints one, and the memory they used
//! does not keep them after use. What is handed to Pingora to send upstream is a copy that Pingora
//! owns; it is not zeroized (see README, "Security model").

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroize;

/// Bytes that hold a credential.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

/// Text that holds a credential (e.g. an `Authorization: Basic` value).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretBytes {
    /// The bytes, to fill in place (they stay in this value, zeroized when dropped).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// The bytes, moved out (not zeroized: the caller owns them now).
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl SecretString {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, to build in place (it stays in this value, zeroized when dropped).
    pub fn as_mut_string(&mut self) -> &mut String {
        &mut self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        SecretBytes(v)
    }
}

impl From<&[u8]> for SecretBytes {
    fn from(v: &[u8]) -> Self {
        SecretBytes(v.to_vec())
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

impl Deref for SecretBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for SecretString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<Vec<u8>> for SecretBytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.0 == *other
    }
}

impl PartialEq<[u8]> for SecretBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for SecretString {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl PartialEq<str> for SecretString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_content() {
        let b = SecretBytes::from(b"hunter2".to_vec());
        let s = SecretString::from("Basic aHVudGVyMg==".to_string());
        assert_eq!(
            format!("{b:?} {s:?}"),
            "<redacted 7 bytes> <redacted 18 bytes>"
        );
        assert_eq!(&*b, b"hunter2");
        assert_eq!(s.as_str(), "Basic aHVudGVyMg==");
    }

    #[test]
    fn moving_the_bytes_out_leaves_nothing_behind_to_zeroize() {
        let b = SecretBytes::from(b"abc".to_vec());
        assert_eq!(b.into_vec(), b"abc".to_vec());
    }

    #[test]
    fn zeroize_clears_what_a_drop_would() {
        // What `Drop` calls, observed on a value that stays alive.
        let mut v = b"hunter2".to_vec();
        v.zeroize();
        assert!(v.is_empty());
        let mut s = "secret".to_string();
        s.zeroize();
        assert!(s.is_empty());
    }
}
