//! Which way the live (or last) connection's media goes: from the selected candidate pair when
//! the peer connects, completed by the camera's own report of how it reaches its TURN server
//! (`{"type":"path",...}` on the data channel), which the pod cannot see.

use std::sync::Mutex;

use p2pcamera_api::relay::{CandidateType, ConnectionPath, Transport};
use webrtc::peer_connection::RTCIceCandidateType;

use crate::metrics::Metrics;

/// The contract's name of a candidate type; `None` for a type webrtc-rs did not determine.
pub fn candidate_type(typ: RTCIceCandidateType) -> Option<CandidateType> {
    match typ {
        RTCIceCandidateType::Host => Some(CandidateType::Host),
        RTCIceCandidateType::Srflx => Some(CandidateType::Srflx),
        RTCIceCandidateType::Prflx => Some(CandidateType::Prflx),
        RTCIceCandidateType::Relay => Some(CandidateType::Relay),
        // Unspecified, and whatever later webrtc-rs versions add.
        _ => None,
    }
}

/// The path of the pod's live (or last) connection, for `/status` and the metrics.
#[derive(Debug, Default)]
pub struct PathRecord {
    current: Mutex<Option<ConnectionPath>>,
}

impl PathRecord {
    /// A peer connected over `path`: it replaces the previous connection's.
    pub fn connected(&self, path: ConnectionPath, metrics: &Metrics) {
        *self.lock() = Some(path);
        metrics.count_connection(path);
    }

    /// The camera says it reaches its TURN server over `transport`; kept only when the pod sees
    /// the camera's relay candidate in the selected pair. Returns the path as it is now.
    pub fn camera_reports(
        &self,
        transport: Transport,
        metrics: &Metrics,
    ) -> Option<ConnectionPath> {
        let mut current = self.lock();
        let updated = current.map(|path| path.with_camera_transport(transport));
        if updated != *current
            && let Some(path) = updated
        {
            *current = Some(path);
            metrics.set_connection_path(path);
        }
        *current
    }

    pub fn get(&self) -> Option<ConnectionPath> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ConnectionPath>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pcamera_api::relay::MediaPath;

    #[test]
    fn the_camera_completes_a_path_only_where_it_relays() {
        let metrics = Metrics::default();
        let record = PathRecord::default();
        assert_eq!(record.camera_reports(Transport::Tcp, &metrics), None);
        record.connected(
            ConnectionPath::of_pair(CandidateType::Host, CandidateType::Relay),
            &metrics,
        );
        let path = record
            .camera_reports(Transport::Tls, &metrics)
            .expect("a path");
        assert_eq!(
            (path.path, path.transport),
            (MediaPath::Relay, Some(Transport::Tls))
        );
        // The next connection is direct: a late report of the old one's relay changes nothing.
        record.connected(
            ConnectionPath::of_pair(CandidateType::Host, CandidateType::Host),
            &metrics,
        );
        record.camera_reports(Transport::Tcp, &metrics);
        assert_eq!(record.get().and_then(|p| p.transport), Some(Transport::Udp));
        let text = metrics.encode();
        assert!(
            text.contains(r#"p2pcamera_pod_connection_path{path="direct",transport="udp"} 1"#)
                && text
                    .contains(r#"p2pcamera_pod_connection_path{path="relay",transport="tls"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn every_known_candidate_type_has_a_name() {
        assert_eq!(
            candidate_type(RTCIceCandidateType::Relay),
            Some(CandidateType::Relay)
        );
        assert_eq!(candidate_type(RTCIceCandidateType::Unspecified), None);
    }
}
