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
/// are hashed first, so only fixed-size digests are compared). No token is `None`: the presented
/// one is still hashed and compared (with a digest no token has), so an unknown session takes as
/// long to refuse as a wrong token.
pub fn token_matches(presented: &str, expected: Option<&[u8]>) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let (expected, known) = match expected {
        Some(token) if !token.is_empty() => (Sha256::digest(token), true),
        _ => (Default::default(), false),
    };
    let equal: bool = presented.ct_eq(&expected).into();
    equal && known
}

/// Checks the presented header against the session's token (`None`: the router knows no token
/// for the session): 401 `missing_token` without a bearer token, 403 `wrong_token` for any token
/// that does not match, whether or not the session exists.
pub fn authorize(header: Option<&str>, expected: Option<&[u8]>) -> Result<(), ApiError> {
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
                authorize(header, Some(&b"secret"[..])),
                Err(ApiError::MissingToken),
                "{header:?}"
            );
        }
    }

    #[test]
    fn right_token_passes_and_wrong_token_is_forbidden() {
        let expected = Some(&b"secret"[..]);
        assert_eq!(authorize(Some("Bearer secret"), expected), Ok(()));
        assert_eq!(authorize(Some("bearer  secret "), expected), Ok(()));
        for wrong in ["Bearer secreT", "Bearer secret2", "Bearer s"] {
            assert_eq!(
                authorize(Some(wrong), expected),
                Err(ApiError::WrongToken),
                "{wrong}"
            );
        }
    }

    #[test]
    fn no_known_token_is_a_wrong_token_and_no_header_is_a_missing_one() {
        assert_eq!(
            authorize(Some("Bearer anything"), None),
            Err(ApiError::WrongToken)
        );
        assert_eq!(authorize(None, None), Err(ApiError::MissingToken));
    }

    #[test]
    fn an_empty_or_unknown_expected_token_never_matches() {
        assert!(!token_matches("", Some(b"".as_slice())));
        assert!(!token_matches("x", Some(b"".as_slice())));
        assert!(!token_matches("", None));
        assert!(!token_matches("x", None));
    }
}
