//! Ferry's one convention for quantities typed by people (docs/UNITS.md).
//!
//! - Sizes are binary (IEC): `512M`, `1.5G`, `1GiB`, `4096B`. `GB` is
//!   refused as ambiguous.
//! - Rates name bits or bytes: `1Gbit`, `100Mbps`, `500MB/s` (decimal
//!   prefixes), `2GiB/s` (binary). `100Mb` is refused as ambiguous.
//! - Durations carry a unit: `300ms`, `1.5s`, `2min`.
//!
//! Every quantity needs its unit and must be greater than zero.

mod bandwidth;
mod duration;
mod error;
mod size;

pub use bandwidth::{Bandwidth, format_bits_per_sec};
pub use duration::{format_duration, parse_duration, parse_duration_or_zero};
pub use error::ParseError;
pub use size::{ByteSize, format_bytes};
