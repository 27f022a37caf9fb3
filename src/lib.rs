//! s3syncfs: a FUSE filesystem that mounts an S3 bucket through a write-through local
//! disk cache, with a background uploader.

pub mod access;
pub mod cache;
pub mod cache_dir;
pub mod cli;
pub mod client;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod doctor;
pub mod etag;
pub mod fs;
pub mod fuse;
mod fuse_kind;
pub mod handover;
pub mod logging;
pub mod mapping;
pub mod mount;
pub mod notify;
pub mod state;
pub mod store;
pub mod sync;
pub mod units;

#[cfg(test)]
mod fuzz;
