//! Integration tests: the real binary mounted with FUSE against an S3 API server on
//! 127.0.0.1, checked both through the mount and directly in the bucket.

mod cli;
mod control;
mod crash;
mod dirs;
mod doctor;
mod economy;
mod field;
mod files;
mod handover;
mod hostile;
mod hostile_host;
mod hostile_input;
mod integrity;
mod kept_pages;
mod linux;
mod model;
mod notify;
mod outage;
mod passthrough;
mod pressure;
mod proxy;
mod reconcile;
mod remote;
mod special;
mod stream;
mod support;
