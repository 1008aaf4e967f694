//! [`SessionKey`]: which CameraSession, as `namespace/name`.

use std::fmt;
use std::str::FromStr;

/// `namespace/name` of a CameraSession.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub namespace: String,
    pub name: String,
}

/// A `"session"` value that is not `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session must be \"namespace/name\", not {0:?}")]
pub struct SessionKeyError(pub String);

impl SessionKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl FromStr for SessionKey {
    type Err = SessionKeyError;

    /// Parses `namespace/name` (both non-empty, exactly one `/`).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self::new(namespace, name))
            }
            _ => Err(SessionKeyError(value.to_owned())),
        }
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_slash_name_and_round_trips() {
        let key: SessionKey = "team-a/cam".parse().expect("valid");
        assert_eq!(key, SessionKey::new("team-a", "cam"));
        assert_eq!(key.to_string(), "team-a/cam");
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "cam", "/cam", "ns/", "a/b/c", "/"] {
            assert_eq!(
                bad.parse::<SessionKey>(),
                Err(SessionKeyError(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
