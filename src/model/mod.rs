//! Pure domain: validated names and the proc's metadata. No IO here.

pub mod ids;
pub mod proc;

pub use ids::{Email, EnvName, ProcName};
pub use proc::{EnvVar, EnvVars, ProcMetadata};
