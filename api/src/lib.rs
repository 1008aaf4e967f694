//! The contract between p2pcamera's processes: what crosses a process boundary, defined once.
//!
//! - [`wire`]: the JSON bodies of camera-pod's and the router's HTTP APIs (offer, answer, filter
//!   reply, `/status`) and their size limits.
//! - [`error`]: the error body and the one [`error::ErrorCode`] enum both servers answer with,
//!   each code with its HTTP status, and what the router makes of a code a pod answered.
//! - [`model_policy`]: which models may be loaded by URL (the administrator's allow-list).
//! - [`pod_env`]: the environment variables that configure camera-pod (the operator sets them).
//! - [`objects`]: labels, annotations, Secret keys and object names the operator writes and the
//!   router reads.
//! - [`session`]: [`session::SessionKey`], the `namespace/name` of a CameraSession.
//! - [`operator_token`]: the token the operator's own calls on a session's pod carry.
//! - [`relay`]: a pod's own TURN relay candidates, their credential, and a connection's path.
//!
//! No Kubernetes, HTTP-framework or WebRTC dependency: both binaries and the tests use it.

pub mod error;
pub mod model_policy;
pub mod objects;
pub mod operator_token;
pub mod pod_env;
pub mod relay;
pub mod session;
#[cfg(feature = "signal")]
pub mod shutdown;
pub mod wire;

pub use error::{ErrorBody, ErrorCode};
pub use model_policy::ModelPolicy;
pub use session::SessionKey;
