//! The token the operator's own calls on a session's camera pod carry (`POST /public-address`).
//!
//! It is derived from the pod's TLS private key (HMAC-SHA256 keyed with the key's PEM, over a fixed
//! label), so it needs no Secret key of its own: the pod reads its key file, the operator the
//! session Secret it wrote. Whoever holds the private key could impersonate the pod anyway; the
//! session's bearer token, which the router and the browser hold, does not give it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the HMAC is taken over: names the token's one use (a new use takes a new label).
const LABEL: &[u8] = b"p2pcamera.io operator token v1";

/// The operator token of the pod whose TLS private key is `tls_key_pem` (64 lowercase hex digits).
pub fn operator_token(tls_key_pem: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(tls_key_pem)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(LABEL);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_follows_the_key_alone() {
        let token = operator_token(b"-----BEGIN PRIVATE KEY-----\nA\n-----END PRIVATE KEY-----\n");
        assert_eq!(token.len(), 64);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            token,
            operator_token(b"-----BEGIN PRIVATE KEY-----\nA\n-----END PRIVATE KEY-----\n")
        );
        assert_ne!(
            token,
            operator_token(b"-----BEGIN PRIVATE KEY-----\nB\n-----END PRIVATE KEY-----\n")
        );
    }
}
