//! Bearer-token extraction and the constant-time comparison against a session's token.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The token from an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, ApiError> {
    let value = header.ok_or(ApiError::MissingToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::MissingToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::MissingToken);
    }
    Ok(token)
}

/// Compares in time independent of where the tokens differ and of their lengths (both sides
/// are hashed first, so only fixed-size digests are compared).
pub fn token_matches(presented: &str, expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

/// Checks the presented header against the session's token.
pub fn authorize(header: Option<&str>, expected: &[u8]) -> Result<(), ApiError> {
    let token = bearer_token(header)?;
    if token_matches(token, expected) {
        Ok(())
    } else {
        Err(ApiError::WrongToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_malformed_header_is_missing_token() {
        for header in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer   "),
            Some("Basic abc"),
            Some("abc"),
        ] {
            assert_eq!(
                authorize(header, b"secret"),
                Err(ApiError::MissingToken),
                "{header:?}"
            );
        }
    }

    #[test]
    fn right_token_passes_and_wrong_token_is_forbidden() {
        assert_eq!(authorize(Some("Bearer secret"), b"secret"), Ok(()));
        assert_eq!(authorize(Some("bearer  secret "), b"secret"), Ok(()));
        assert_eq!(
            authorize(Some("Bearer secreT"), b"secret"),
            Err(ApiError::WrongToken)
        );
        assert_eq!(
            authorize(Some("Bearer secret2"), b"secret"),
            Err(ApiError::WrongToken)
        );
        assert_eq!(
            authorize(Some("Bearer s"), b"secret"),
            Err(ApiError::WrongToken)
        );
    }

    #[test]
    fn an_empty_expected_token_never_matches() {
        assert!(!token_matches("", b""));
        assert!(!token_matches("x", b""));
    }
}
