//! camera-pod: one camera, one GPU. Receives a camera over WebRTC, runs an ONNX filter on every
//! picture it can, and sends the filtered video back on the same peer connection.
//!
//! Data flow: `media` (WebRTC glue, RTP) -> `codec` (decode) -> `mailbox::LatestFrame` ->
//! `filter` (its own thread) -> `codec` (encode) -> `media` (RTP out). `signaling` serves HTTP.

pub mod codec;
pub mod filter;
pub mod media;
pub mod frame;
pub mod mailbox;
pub mod config;
pub mod metrics;
pub mod server;
pub mod signaling;
