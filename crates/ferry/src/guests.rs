//! The guest programs built into Ferry.

/// The image of built-in guest `name`, or an error listing the choices.
pub fn image(name: &str) -> anyhow::Result<&'static [u8]> {
    guest::image(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown guest program {name:?} (built-in guests: {})",
            guest::NAMES.join(", ")
        )
    })
}
