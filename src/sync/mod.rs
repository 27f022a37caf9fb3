//! Background work on tokio: the uploader that writes local changes to the bucket,
//! the reconciler that brings in other clients' changes, and the probe of an offline
//! bucket.

mod probe;
pub mod reach;
pub mod reconciler;
pub mod report;
pub(crate) mod transfer;
pub mod uploader;

pub use probe::probe_conditional_writes;
pub use reconciler::{PollPace, Reconciler};
pub use report::UploadReport;
pub use uploader::{Uploader, UploaderConfig};
