//! camera-pod: one camera, one GPU. Receives a camera over WebRTC, runs an ONNX filter on every
//! picture it can, and sends the filtered video back on the same peer connection.
//!
//! Data flow:
//!
//! ```text
//! offer (POST /offer) -> signaling -> media::Camera answers, one peer connection
//! RTP in -> media::rtp (depacketize) -> codec (decode thread) -> media::limits (size, fps)
//!        -> mailbox::LatestFrame -> filter::FilterWorker (filter thread: pre-process, infer,
//!           composite) -> mailbox::LatestFrame -> codec (encode thread) -> media::rtp -> RTP out
//! ```
//!
//! `signaling` serves HTTP with the bodies and error codes of the contract crate
//! `p2pcamera_api`; `config` reads the flags (env var names from `p2pcamera_api::pod_env`). Modules
//! depend downwards only: `server` wires `config`, `signaling`, `media` and `filter`; `config`
//! imports `media` and `filter`, never the reverse; `media` uses `filter` and `codec`; `filter`
//! knows nothing of WebRTC.

pub mod codec;
pub mod config;
pub mod filter;
pub mod frame;
pub mod mailbox;
pub mod media;
pub mod metrics;
pub mod server;
pub mod signaling;
