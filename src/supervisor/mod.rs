//! Wires the stages in data-flow order and owns shutdown (being written).

use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub async fn run(_config: Config, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
