//! Helpers of the bench binaries (`benches/`): the echo backend they re-execute themselves as, the
//! HTTP/2 load generators, the peer proxies they measure, and `/proc` sampling for the reports.

pub mod echo;
pub mod gather_attack;
pub mod h2cfg;
pub mod load;
pub mod peers;
pub mod procstat;
pub mod report;
