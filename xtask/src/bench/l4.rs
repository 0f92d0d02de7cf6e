use super::{Ctx, Section};
pub fn run(_ctx: &Ctx) -> anyhow::Result<(Section, Vec<String>)> { anyhow::bail!("not yet") }
