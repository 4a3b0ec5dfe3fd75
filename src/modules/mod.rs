//! Modules: uploads prepared and compiled ahead of time (`prepare`,
//! `artifact`), the files under `DATA` (`store`), the registry the request
//! path reads (`registry`) and the drop folder (`watcher`).

pub mod artifact;
pub mod preinit;
pub mod prepare;
pub mod registry;
pub mod store;
mod upgrade;
pub mod watcher;

pub use registry::{Deployed, Quantiles, Registry};
pub use store::{DeployError, ModuleStore, Scan};
