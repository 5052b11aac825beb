//! One integration-test binary (as regex does): data-driven cases, CLI golden tests, property
//! tests and pinned regressions.

mod alloc;
mod cases;
mod cli;
mod embedding;
#[cfg(all(feature = "parquet", feature = "brotli"))]
mod exports;
mod kernels;
mod projection;
mod props;
mod references;
mod regressions;
mod robustness;
#[cfg(feature = "server")]
mod server;
mod sql;
#[cfg(feature = "store")]
mod store;
