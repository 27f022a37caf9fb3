//! Background work on tokio: the uploader that writes local changes to the bucket.

mod transfer;
pub mod uploader;

pub use uploader::{Uploader, UploaderConfig};
