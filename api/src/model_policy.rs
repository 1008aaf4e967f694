//! Which models may be loaded by URL: the administrator's allow-list (a CameraClass's `models`,
//! passed to camera-pod as `P2PCAMERA_MODEL_ALLOWED_HOSTS` / `P2PCAMERA_MODEL_ALLOWED_DIGESTS`).
//!
//! A model is allowed when its sha256 is listed, or when its URL is `https://` and its host is
//! listed. A listed host without a port matches the URL's host on the default port (443) only; a
//! listed `host:port` matches exactly that. Host names compare case-insensitively. An empty list
//! allows nothing. The operator (for a session's spec) and camera-pod (for a switch requested by
//! a browser) apply the same rule with [`ModelPolicy::allows`], before any network request.

/// The allow-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    hosts: Vec<String>,
    digests: Vec<String>,
}

impl ModelPolicy {
    /// A policy from host entries (`host` or `host:port`) and sha256 digests; entries are
    /// trimmed and lower-cased, empty ones dropped.
    pub fn new<H, D>(hosts: H, digests: D) -> Self
    where
        H: IntoIterator,
        H::Item: AsRef<str>,
        D: IntoIterator,
        D::Item: AsRef<str>,
    {
        let clean = |s: &str| Some(s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty());
        Self {
            hosts: hosts
                .into_iter()
                .filter_map(|h| clean(h.as_ref()))
                .collect(),
            digests: digests
                .into_iter()
                .filter_map(|d| clean(d.as_ref()))
                .collect(),
        }
    }

    /// The host entries, comma-separated (the environment variable's value).
    pub fn hosts_list(&self) -> String {
        self.hosts.join(",")
    }

    /// The digests, comma-separated (the environment variable's value).
    pub fn digests_list(&self) -> String {
        self.digests.join(",")
    }

    /// Whether nothing may be loaded by URL.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.digests.is_empty()
    }

    /// Whether the model at `url` with `sha256` may be loaded.
    pub fn allows(&self, url: &str, sha256: &str) -> bool {
        let sha256 = sha256.trim().to_ascii_lowercase();
        if self.digests.contains(&sha256) {
            return true;
        }
        let Some(authority) = https_authority(url) else {
            return false;
        };
        let (host, port) = split_port(&authority);
        self.hosts.iter().any(|entry| {
            let (allowed_host, allowed_port) = split_port(entry);
            allowed_host == host && allowed_port.unwrap_or(443) == port.unwrap_or(443)
        })
    }
}

/// The lower-cased `host[:port]` of an `https://` URL; `None` for another scheme, userinfo or an
/// empty host.
fn https_authority(url: &str) -> Option<String> {
    let rest = url
        .get(..8)?
        .eq_ignore_ascii_case("https://")
        .then(|| &url[8..])?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(authority.to_ascii_lowercase())
}

/// `host` and its port, if one is given and numeric; a bracketed IPv6 host keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            match port.parse() {
                Ok(port) => (host, Some(port)),
                // Not a port: an unparsable authority matches no entry.
                Err(_) => (authority, Some(0)),
            }
        }
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy from the comma-separated forms of the two environment variables.
    fn from_lists(hosts: &str, digests: &str) -> ModelPolicy {
        ModelPolicy::new(hosts.split(','), digests.split(','))
    }

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_empty_policy_allows_nothing() {
        let policy = from_lists("", " , ");
        assert!(policy.is_empty());
        assert!(!policy.allows("https://models.example/m.onnx", DIGEST));
    }

    #[test]
    fn a_listed_digest_allows_any_https_url() {
        let policy = ModelPolicy::new(Vec::<&str>::new(), [DIGEST.to_uppercase()]);
        assert!(policy.allows("https://anywhere.example/m.onnx", DIGEST));
        assert!(!policy.allows("https://anywhere.example/m.onnx", &DIGEST.replace('0', "f")));
    }

    #[test]
    fn hosts_match_exactly_with_the_default_port() {
        let policy = from_lists("Models.Example, cdn.example:8443", "");
        assert!(policy.allows("https://models.example/a/m.onnx?x=1", DIGEST));
        assert!(policy.allows("HTTPS://MODELS.EXAMPLE:443/m.onnx", DIGEST));
        assert!(policy.allows("https://cdn.example:8443/m.onnx", DIGEST));
        for refused in [
            "http://models.example/m.onnx",
            "https://models.example:8443/m.onnx",
            "https://cdn.example/m.onnx",
            "https://evil.models.example/m.onnx",
            "https://models.example.evil/m.onnx",
            "https://user@models.example/m.onnx",
            "https://models.example:x/m.onnx",
            "https:///m.onnx",
            "models.example/m.onnx",
            "",
        ] {
            assert!(!policy.allows(refused, DIGEST), "{refused}");
        }
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets() {
        let policy = from_lists("[::1]:8443", "");
        assert!(policy.allows("https://[::1]:8443/m.onnx", DIGEST));
        assert!(!policy.allows("https://[::1]/m.onnx", DIGEST));
    }

    #[test]
    fn lists_round_trip() {
        let policy = from_lists("a.example,b.example:8443", DIGEST);
        assert_eq!(
            from_lists(&policy.hosts_list(), &policy.digests_list()),
            policy
        );
    }
}
