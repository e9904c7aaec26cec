//! The small typed vocabulary of GPU sharing: a GPU index, a sharing mode, an MPS percentage and
//! an MPS memory limit. Parsed once at the edge, so the decision core never re-checks strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// MPS allows at most 48 client processes per GPU (a CUDA limit on Volta and later, T4 included).
pub const MPS_MAX_CLIENTS: u32 = 48;

/// The variables gpushare writes and owns on the containers it selects.
pub const VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
pub const MPS_THREAD_PERCENTAGE: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";
pub const MPS_MEMORY_LIMIT: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";
pub const MPS_PIPE_DIRECTORY: &str = "CUDA_MPS_PIPE_DIRECTORY";
/// The variables that select a GPU or cap a share of it: a container that writes one of them
/// itself uses a GPU by hand (CONTRACT section 2b).
pub const GPU_VARIABLES: [&str; 3] = [VISIBLE_DEVICES, MPS_THREAD_PERCENTAGE, MPS_MEMORY_LIMIT];
/// The hostPath volume gpushare adds for `mps.pipeDirectory`; the name marks it as gpushare's.
pub const PIPE_VOLUME: &str = "gpushare-mps-pipe";

/// A GPU's index on its node, as `NVIDIA_VISIBLE_DEVICES` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuIndex(pub u32);

impl fmt::Display for GpuIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a GPU is shared. MPS is switched on per device by the admin, so each GPU has exactly one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "time-slicing")]
    TimeSlicing,
    #[serde(rename = "mps")]
    Mps,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::TimeSlicing => "time-slicing",
            Mode::Mps => "mps",
        }
    }

    pub fn other(self) -> Mode {
        match self {
            Mode::TimeSlicing => Mode::Mps,
            Mode::Mps => Mode::TimeSlicing,
        }
    }

    pub fn parse(value: &str) -> Option<Mode> {
        match value {
            "time-slicing" => Some(Mode::TimeSlicing),
            "mps" => Some(Mode::Mps),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A share of a GPU's threads for one MPS client, always in 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percentage(u8);

impl Percentage {
    pub fn new(value: u64) -> Option<Percentage> {
        (1..=100)
            .contains(&value)
            .then_some(Percentage(value as u8))
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl fmt::Display for Percentage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An MPS pinned device memory limit such as `512M` or `2G`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemoryLimit(String);

impl MemoryLimit {
    /// Accepts a positive integer followed by `M` or `G`, as CUDA_MPS_PINNED_DEVICE_MEM_LIMIT does.
    pub fn parse(value: &str) -> Option<MemoryLimit> {
        let (digits, unit) = match (value.strip_suffix('M'), value.strip_suffix('G')) {
            (Some(digits), _) => (digits, 'M'),
            (_, Some(digits)) => (digits, 'G'),
            _ => return None,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let amount: u64 = digits.parse().ok()?;
        (amount > 0).then(|| MemoryLimit(format!("{amount}{unit}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_bounds() {
        assert_eq!(Percentage::new(0), None);
        assert_eq!(Percentage::new(1).map(Percentage::get), Some(1));
        assert_eq!(Percentage::new(100).map(Percentage::get), Some(100));
        assert_eq!(Percentage::new(101), None);
    }

    #[test]
    fn memory_limit_forms() {
        assert_eq!(MemoryLimit::parse("512M").unwrap().as_str(), "512M");
        assert_eq!(MemoryLimit::parse("2G").unwrap().as_str(), "2G");
        for bad in [
            "", "M", "0G", "2g", "2Gi", "-1G", "1.5G", "2 G", "2", "2Ｇ", "Ｇ",
        ] {
            assert_eq!(MemoryLimit::parse(bad), None, "{bad:?} should be rejected");
        }
    }
}
