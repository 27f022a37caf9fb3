//! A small, faithful S3 API server for tests and the demo: a flat key space (so
//! `dir/` markers and a key `a` beside `a/b` are plain objects, as on real S3),
//! ETags in listings, user metadata on every object, request and byte counters.
//!
//! We do not use `s3s-fs` because it maps keys onto a directory tree, which cannot
//! represent those cases. Bodies live in files under a data directory (named by a
//! counter, never by the key); the index lives in memory, so it survives a
//! `Server::stop` + `Server::start` within one process but not a process restart.

mod backend;
mod s3impl;
mod server;

pub use backend::{Backend, StatsSnapshot};
pub use server::Server;
