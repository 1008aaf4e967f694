//! Bearer token checks (constant-time comparison).

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// Accepts the request when no token is configured, or when it carries
/// `Authorization: Bearer <token>` with exactly that token.
pub fn check_bearer(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::MissingToken);
    };
    let Some(given) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return Err(ApiError::MissingToken);
    };
    if same_token(given.trim(), expected) {
        Ok(())
    } else {
        Err(ApiError::WrongToken)
    }
}

/// Whether `given` is exactly `expected`, compared in constant time.
pub fn same_token(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use p2pcamera_api::ErrorCode;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn no_configured_token_accepts_everything() {
        assert!(check_bearer(None, &headers(None)).is_ok());
        assert!(check_bearer(None, &headers(Some("Bearer x"))).is_ok());
    }

    #[test]
    fn missing_or_malformed_header_is_a_missing_token() {
        for h in [None, Some("Basic abc"), Some("abc")] {
            assert_eq!(
                check_bearer(Some("t"), &headers(h)).unwrap_err().code(),
                ErrorCode::MissingToken
            );
        }
    }

    #[test]
    fn wrong_token_is_refused_and_right_one_passes() {
        let err = check_bearer(Some("secret"), &headers(Some("Bearer secreT"))).unwrap_err();
        assert_eq!(err.code(), ErrorCode::WrongToken);
        let err = check_bearer(Some("secret"), &headers(Some("Bearer secret2"))).unwrap_err();
        assert_eq!(err.code(), ErrorCode::WrongToken);
        assert!(check_bearer(Some("secret"), &headers(Some("Bearer secret"))).is_ok());
    }
}
