//! Filters: what camera-pod does to every picture.

use crate::frame::VideoFrame;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("inference failed: {0}")]
    Inference(String),
}

/// A video filter. Owned by the filter thread; `apply` runs once per picture that reaches it.
pub trait Filter: Send {
    /// Stable name, as given on the command line (`passthrough`, `selfie-blur`, ...).
    fn name(&self) -> &str;
    fn apply(&mut self, frame: &mut VideoFrame) -> Result<(), FilterError>;
}

/// The identity filter.
pub struct Passthrough;

impl Filter for Passthrough {
    fn name(&self) -> &str {
        "passthrough"
    }
    fn apply(&mut self, _frame: &mut VideoFrame) -> Result<(), FilterError> {
        Ok(())
    }
}
