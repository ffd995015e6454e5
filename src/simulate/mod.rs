//! Simulated people counters with ground truth (being written).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How the simulated hall behaves.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub seed: u64,
    pub truth: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub warmup: Duration,
    pub arrivals_per_min: f64,
    pub mean_dwell: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("simulator is not written yet")]
    NotYet,
}

pub async fn run(
    _config: &Config,
    _options: SimulateOptions,
    _shutdown: CancellationToken,
) -> Result<(), SimulateError> {
    Err(SimulateError::NotYet)
}
