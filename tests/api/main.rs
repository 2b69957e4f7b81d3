//! The integration tests: a real proctord over real HTTP, on SQLite and on
//! PostgreSQL + Redis (see `helpers::backends`).

mod admin;
mod auth;
mod cli;
mod cluster;
mod console;
mod executions;
mod fake_kube;
mod health;
mod helpers;
mod hostile;
mod kubernetes;
mod lifecycle;
mod logs;
mod observability;
mod orphans;
mod procs;
mod replica;
mod retention;
mod schedules;
mod secrets;
mod stats;
mod web;
