//! The one-command demo (being written).

use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub fn example_config() -> anyhow::Result<Config> {
    anyhow::bail!("not written yet")
}

pub async fn run(_config: Config, _seed: u64, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
