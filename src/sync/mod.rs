//! Background work on tokio: the uploader that writes local changes to the bucket.

pub mod report;
mod transfer;
pub mod uploader;

pub use report::UploadReport;
pub use uploader::{Uploader, UploaderConfig};
