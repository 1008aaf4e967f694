//! Pure decisions of the ACME client: when to renew, how long to back off, whether a
//! certificate covers the configured names, and how the status condition moves.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What the client knows about the certificate currently stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub names: Vec<String>,
}

/// Parses the leaf of a PEM chain.
pub fn certificate_info(chain_pem: &[u8]) -> Option<CertificateInfo> {
    let leaf = rustls_pemfile::certs(&mut &chain_pem[..]).next()?.ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let validity = parsed.validity();
    let at = |seconds: i64| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    };
    let names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        Some(dns.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertificateInfo {
        not_before: at(validity.not_before.timestamp()),
        not_after: at(validity.not_after.timestamp()),
        names,
    })
}

/// Whether the certificate names every wanted host (case-insensitive).
pub fn covers(info: &CertificateInfo, hosts: &[String]) -> bool {
    hosts.iter().all(|host| {
        info.names
            .iter()
            .any(|name| name.eq_ignore_ascii_case(host))
    })
}

/// When to renew: at 2/3 of the lifetime, or earlier at a point of the server's suggested
/// renewal window (ARI). `pick` in [0, 1) chooses the point in the window (RFC 9773 asks for
/// a uniformly random one, so replicas and clients do not renew in lockstep).
pub fn renew_at(
    info: &CertificateInfo,
    ari_window: Option<(SystemTime, SystemTime)>,
    pick: f64,
) -> SystemTime {
    let lifetime = info
        .not_after
        .duration_since(info.not_before)
        .unwrap_or_default();
    let two_thirds = info.not_before + lifetime.mul_f64(2.0 / 3.0);
    match ari_window {
        Some((start, end)) if end >= start => {
            let span = end.duration_since(start).unwrap_or_default();
            two_thirds.min(start + span.mul_f64(pick.clamp(0.0, 1.0)))
        }
        _ => two_thirds,
    }
}

/// Delay before retry number `failures` (1 for the first retry): doubling from `min`, capped.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1));
    min.saturating_mul(factor).min(max)
}

/// The next `CertificateReady` condition: `lastTransitionTime` only moves when the status flips.
pub fn next_condition(
    previous: Option<&Condition>,
    ready: bool,
    reason: &str,
    message: &str,
    now: Time,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: CONDITION_TYPE.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time,
        observed_generation: None,
    }
}

pub const CONDITION_TYPE: &str = "CertificateReady";

/// The JSON merge patch that removes every entry of the challenge ConfigMap's `data`, or
/// `None` when there is nothing to remove.
pub fn clear_challenges_patch(
    data: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<serde_json::Value> {
    let data = data.filter(|data| !data.is_empty())?;
    let removals: serde_json::Map<String, serde_json::Value> = data
        .keys()
        .map(|token| (token.clone(), serde_json::Value::Null))
        .collect();
    Some(serde_json::json!({ "data": removals }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(lifetime_secs: u64) -> CertificateInfo {
        let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        CertificateInfo {
            not_before,
            not_after: not_before + Duration::from_secs(lifetime_secs),
            names: vec!["a.example".into()],
        }
    }

    #[test]
    fn renews_at_two_thirds_of_the_lifetime() {
        let cert = info(90 * 86400);
        assert_eq!(
            renew_at(&cert, None, 0.5),
            cert.not_before + Duration::from_secs(60 * 86400)
        );
        // Short-lived certificates work the same way.
        let short = info(30);
        assert_eq!(
            renew_at(&short, None, 0.5),
            short.not_before + Duration::from_secs(20)
        );
    }

    #[test]
    fn ari_can_only_bring_renewal_earlier() {
        let cert = info(90 * 86400);
        let day = |d: u64| cert.not_before + Duration::from_secs(d * 86400);
        assert_eq!(renew_at(&cert, Some((day(10), day(20))), 0.5), day(15));
        assert_eq!(renew_at(&cert, Some((day(70), day(80))), 0.0), day(60));
        // A window that is already open (e.g. after revocation) means renew now.
        assert_eq!(renew_at(&cert, Some((day(1), day(1))), 0.9), day(1));
        // A nonsensical window is ignored.
        assert_eq!(renew_at(&cert, Some((day(20), day(10))), 0.5), day(60));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(60));
        let delays: Vec<_> = (1..=6).map(|n| backoff(n, min, max).as_secs()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(200, min, max), max);
    }

    #[test]
    fn coverage_needs_every_host() {
        let cert = info(10);
        assert!(covers(&cert, &["A.example".into()]));
        assert!(!covers(&cert, &["a.example".into(), "b.example".into()]));
    }

    #[test]
    fn transition_time_moves_only_on_flips() {
        let t = |s: i64| Time(chrono_like(s));
        let first = next_condition(None, false, "IssuanceFailed", "down", t(1));
        let again = next_condition(Some(&first), false, "IssuanceFailed", "still down", t(2));
        assert_eq!(again.last_transition_time, t(1));
        assert_eq!(again.message, "still down");
        let flipped = next_condition(Some(&again), true, "Issued", "ok", t(3));
        assert_eq!(
            (flipped.status.as_str(), flipped.last_transition_time),
            ("True", t(3))
        );
    }

    fn chrono_like(seconds: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_default()
    }

    #[test]
    fn clearing_challenges_removes_every_token_and_skips_empty_maps() {
        assert_eq!(clear_challenges_patch(None), None);
        assert_eq!(clear_challenges_patch(Some(&Default::default())), None);
        let data = std::collections::BTreeMap::from([
            ("t1".to_owned(), "a".to_owned()),
            ("t2".to_owned(), "b".to_owned()),
        ]);
        assert_eq!(
            clear_challenges_patch(Some(&data)),
            Some(serde_json::json!({"data": {"t1": null, "t2": null}}))
        );
    }

    #[test]
    fn reads_validity_and_names_from_pem() {
        let Ok(cert) =
            rcgen::generate_simple_self_signed(vec!["router.example".into(), "B.example".into()])
        else {
            panic!("rcgen")
        };
        let Some(parsed) = certificate_info(cert.cert.pem().as_bytes()) else {
            panic!("parse")
        };
        assert_eq!(
            parsed.names,
            vec!["router.example".to_owned(), "b.example".to_owned()]
        );
        assert!(parsed.not_after > parsed.not_before);
        assert_eq!(certificate_info(b"garbage"), None);
    }
}
