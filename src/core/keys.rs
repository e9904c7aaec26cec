//! The names of the annotations users set and gpushare writes (CONTRACT sections 2 and 3): a leaf
//! every part of the core may read without pulling in how they are parsed.

pub const PREFIX: &str = "gpushare.io/";
pub const GPU: &str = "gpushare.io/gpu";
pub const MODE: &str = "gpushare.io/mode";
pub const MPS_PERCENTAGE: &str = "gpushare.io/mps-percentage";
pub const MPS_MEMORY_LIMIT: &str = "gpushare.io/mps-memory-limit";
pub const CONTAINERS: &str = "gpushare.io/containers";
/// The keys users set; any one of them makes a workload managed.
pub const USER_KEYS: [&str; 5] = [GPU, MODE, MPS_PERCENTAGE, MPS_MEMORY_LIMIT, CONTAINERS];

pub const ASSIGNED_GPU: &str = "gpushare.io/assigned-gpu";
pub const ASSIGNED_MODE: &str = "gpushare.io/assigned-mode";
pub const ASSIGNED_MPS_PERCENTAGE: &str = "gpushare.io/assigned-mps-percentage";
/// The keys gpushare writes; they are not typos and do not make a workload managed.
pub const ASSIGNED_KEYS: [&str; 3] = [ASSIGNED_GPU, ASSIGNED_MODE, ASSIGNED_MPS_PERCENTAGE];
