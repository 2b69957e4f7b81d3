//! Pure domain: validated names, proc metadata and the execution status machine. No IO.

pub mod execution;
pub mod ids;
pub mod notify;
pub mod patterns;
pub mod pod;
pub mod proc;
pub mod schedule;

pub use execution::{ExecutionName, Resume, Status};
pub use ids::{Email, EnvName, ProcName};
pub use notify::{NotifyKind, NotifyOn, NotifyTarget};
pub use pod::{PodOptions, PodPolicy};
pub use proc::{EnvVar, EnvVars, ProcMetadata};
pub use schedule::{ConcurrencyPolicy, CronSpec};
