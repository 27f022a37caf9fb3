//! Errors of the filesystem core, in POSIX terms; the FUSE adapter maps them to errno.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument")]
    Invalid,
    #[error("name not usable as an object key")]
    NameTooLong,
    #[error("operation not supported")]
    NotSupported,
    #[error("no space left in the cache")]
    NoSpace,
    /// The cache file system's own limits, passed on as themselves: a size past what
    /// its files can hold (EFBIG), a user's disk quota (EDQUOT).
    #[error("file too large for the cache")]
    TooBig,
    #[error("disk quota of the cache exceeded")]
    Quota,
    #[error("permission denied")]
    Access,
    #[error("I/O error: {0}")]
    Io(String),
    /// The bucket holds another version than the one being read.
    #[error("{0}")]
    Stale(String),
}

impl From<std::io::Error> for FsError {
    fn from(err: std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOSPC) => return FsError::NoSpace,
            Some(libc::EFBIG) => return FsError::TooBig,
            Some(libc::EDQUOT) => return FsError::Quota,
            Some(libc::ENAMETOOLONG) => return FsError::NameTooLong,
            _ => {}
        }
        if err.kind() == std::io::ErrorKind::PermissionDenied {
            // Also how a fetch reports the bucket's AccessDenied.
            FsError::Access
        } else if err.kind() == std::io::ErrorKind::StaleNetworkFileHandle {
            FsError::Stale(err.to_string())
        } else {
            FsError::Io(err.to_string())
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;
