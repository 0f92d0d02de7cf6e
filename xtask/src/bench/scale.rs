use super::{Ctx, Section};
pub fn run(_ctx: &Ctx) -> anyhow::Result<Section> { anyhow::bail!("not yet") }
