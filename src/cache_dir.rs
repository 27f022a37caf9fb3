//! The cache dir: which directory s3syncfs may take as its own, the owner and mode it
//! must have, and opening our files in it without following links.
//!
//! A directory is ours when it does not exist (we make it), is empty, holds our marker
//! (`.s3syncfs-cache`, naming the endpoint, bucket and prefix), or has the layout of an
//! earlier version that wrote no marker (see `earlier_layout`). Anything else is
//! refused before a byte in it changes: s3syncfs deletes cache files it no longer
//! needs, and must never do that to files it did not make.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The marker file: what makes a non-empty directory a cache dir of ours.
pub const MARKER: &str = ".s3syncfs-cache";

/// Where a changed marker is written before it is renamed over the old one.
const MARKER_NEW: &str = ".s3syncfs-cache.new";

/// What s3syncfs makes at the top of a cache dir, and of which kind each must be.
/// `data` holds the content files; the rest are opened by path, so a link or a FIFO
/// planted at one of these names is refused before anything is opened.
const OURS: &[(&str, Kind)] = &[
    (MARKER, Kind::File),
    (MARKER_NEW, Kind::File),
    ("data", Kind::Dir),
    ("lock", Kind::File),
    ("state.db", Kind::File),
    ("state.db-wal", Kind::File),
    ("state.db-shm", Kind::File),
    ("state.db-journal", Kind::File),
    ("state.journal", Kind::File),
    ("control.sock", Kind::Socket),
    ("s3syncfs.log", Kind::File),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Socket,
}

/// The mount a cache dir serves, as its marker names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
}

/// The marker's content: JSON, so any key prefix round-trips.
#[derive(Serialize, Deserialize)]
struct Marker {
    note: String,
    #[serde(flatten)]
    owner: Owner,
}

const NOTE: &str = "This directory is the cache of an s3syncfs mount: only s3syncfs \
                    changes it. Remove it only once `s3syncfs status` showed nothing \
                    waiting, or changes not yet in the bucket are lost.";

/// What `prepare` found, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// It did not exist: made now (mode 0700).
    Created,
    /// An empty directory: marked now, its mode left as it was.
    Empty,
    /// Our marker, for this bucket and prefix.
    Marked,
    /// The layout of an earlier version without a marker: marked now.
    Adopted,
}

/// Makes sure `dir` may serve as the cache dir of `owner`, making and marking it if it
/// is new or empty. Refuses, with a sentence saying what to do, a directory that is
/// not ours, owned by another user, writable by group or others, marked for another
/// bucket or prefix, or holding a link (or anything of the wrong kind) at one of the
/// names we open.
pub fn prepare(dir: &Path, owner: &Owner) -> anyhow::Result<Found> {
    let shown = dir.display();
    match fs::symlink_metadata(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).with_context(|| {
                    format!("cannot create {}, the cache dir's parent", parent.display())
                })?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {
                    // Ours: 0700 whatever the umask took away.
                    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                        .with_context(|| format!("cannot set the mode of {shown}"))?;
                    write_marker(dir, owner)?;
                    return Ok(Found::Created);
                }
                // Another mount made it a moment ago: checked below like any other.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => {
                    bail!("cannot create cache dir {shown}: {err}; give a cache_dir= you can write")
                }
            }
        }
        Err(err) => bail!("cannot examine cache dir {shown}: {err}"),
        Ok(_) => {}
    }
    let link = fs::symlink_metadata(dir).with_context(|| format!("cannot examine {shown}"))?;
    let me = euid();
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        bail!(
            "cache dir {shown} is a symbolic link owned by uid {}: whoever owns a link can \
             point it elsewhere at any time. Give the directory it points to instead, or \
             a directory of your own",
            link.uid()
        );
    }
    let meta = fs::metadata(dir).with_context(|| format!("cannot examine {shown}"))?;
    if !meta.is_dir() {
        bail!("cache dir {shown} is not a directory: give a directory (cache_dir=)");
    }
    if let Err(why) = check_owner_and_mode(&shown.to_string(), meta.uid(), meta.mode(), me) {
        bail!("{why}");
    }
    let names: Vec<OsString> = fs::read_dir(dir)
        .with_context(|| format!("cannot read cache dir {shown}"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot read cache dir {shown}"))?;
    if names.is_empty() {
        write_marker(dir, owner)?;
        return Ok(Found::Empty);
    }
    let found = match fs::symlink_metadata(dir.join(MARKER)) {
        Ok(_) => {
            check_kinds(dir)?;
            check_marker(dir, owner)?;
            Found::Marked
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Err(why) = earlier_layout(dir, &names) {
                bail!("{}", foreign_sentence(dir, &owner.bucket, &why));
            }
            check_kinds(dir)?;
            write_marker(dir, owner)?;
            tracing::info!(dir = %shown, "cache dir of an earlier version: marked as ours");
            Found::Adopted
        }
        Err(err) => bail!("cannot examine {}: {err}", dir.join(MARKER).display()),
    };
    Ok(found)
}

/// A cache dir's name under a root: BUCKET, or BUCKET+PREFIX with `+` for `/`.
pub fn name_for(bucket: &str, prefix: &str) -> String {
    match prefix.trim_end_matches('/') {
        "" => bucket.to_string(),
        prefix => format!("{bucket}+{}", prefix.replace('/', "+")),
    }
}

/// The cache dir under s3fs's `use_cache=ROOT`: ROOT/NAME, as s3fs makes ROOT/BUCKET,
/// unless ROOT itself is a cache dir of this mount an earlier version made of it.
pub fn under_root(root: &Path, bucket: &str, prefix: &str) -> std::path::PathBuf {
    match is_cache_dir_of(root, bucket, prefix) {
        true => root.to_path_buf(),
        false => root.join(name_for(bucket, prefix)),
    }
}

/// Whether `dir` is already a cache dir of `bucket` and `prefix` (by its marker) or of
/// an earlier version (by its layout). Earlier versions took s3fs's `use_cache=DIR` as
/// the cache dir itself: such a dir stays in use, with what it holds pending.
pub fn is_cache_dir_of(dir: &Path, bucket: &str, prefix: &str) -> bool {
    let mut text = String::new();
    let marked = open_file(&dir.join(MARKER), OpenOptions::new().read(true), false)
        .and_then(|mut f| f.read_to_string(&mut text));
    if marked.is_ok() {
        return serde_json::from_str::<Marker>(&text)
            .is_ok_and(|m| m.owner.bucket == bucket && m.owner.prefix == prefix);
    }
    let names: Vec<OsString> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect(),
        Err(_) => return false,
    };
    !names.is_empty() && earlier_layout(dir, &names).is_ok()
}

/// The ssh rule for key files, applied to the cache dir: it must be the mounting
/// user's, and nobody else may write in it (they could replace the files we trust).
pub(crate) fn check_owner_and_mode(dir: &str, uid: u32, mode: u32, me: u32) -> Result<(), String> {
    if uid != me {
        return Err(format!(
            "cache dir {dir} belongs to uid {uid}, not to uid {me} who mounts: its owner \
             could read the cached data and change what s3syncfs trusts. Use a directory of \
             your own, or if this one is yours: chown {me} {dir}"
        ));
    }
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "others",
        (true, true) => "its group and others",
    };
    Err(format!(
        "cache dir {dir} is writable by {who} (mode {:04o}): they could replace the files \
         s3syncfs trusts. Fix it with chmod go-w {dir} (or chmod 700 {dir})",
        mode & 0o7777
    ))
}

/// Whether `names` (the entries of `dir`) are the layout an earlier version left: a
/// `state.db` that is an SQLite database, `data/` (if there) a real directory of
/// content files named by 16 hex digits, and nothing but names we make. Err says what
/// does not fit.
fn earlier_layout(dir: &Path, names: &[OsString]) -> Result<(), String> {
    let strangers: Vec<String> = names
        .iter()
        .filter(|n| !OURS.iter().any(|(ours, _)| n.as_os_str() == *ours))
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    if !strangers.is_empty() {
        return Err(format!("it holds {}", some_names(strangers)));
    }
    let state = dir.join("state.db");
    let mut header = [0u8; 16];
    let sqlite = fs::symlink_metadata(&state).is_ok_and(|m| m.is_file())
        && File::open(&state)
            .and_then(|mut f| f.read_exact(&mut header))
            .is_ok()
        && &header == b"SQLite format 3\0";
    if !sqlite {
        return Err("it has no state.db of s3syncfs".into());
    }
    let data = dir.join("data");
    match fs::symlink_metadata(&data) {
        Err(_) => Ok(()),
        Ok(m) if !m.is_dir() => Err("its data is not a directory".into()),
        Ok(_) => {
            let odd: Vec<String> = fs::read_dir(&data)
                .map_err(|e| format!("its data/ cannot be read ({e})"))?
                .filter_map(Result::ok)
                .filter(|e| !(is_content_name(e) && e.file_type().is_ok_and(|t| t.is_file())))
                .map(|e| format!("data/{}", e.file_name().to_string_lossy()))
                .collect();
            match odd.is_empty() {
                true => Ok(()),
                false => Err(format!("it holds {}", some_names(odd))),
            }
        }
    }
}

fn is_content_name(entry: &fs::DirEntry) -> bool {
    is_content_file_name(&entry.file_name().to_string_lossy())
}

/// Content files are named by a local id: 16 lowercase hex digits.
pub fn is_content_file_name(name: &str) -> bool {
    name.len() == 16
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// "a, b, c and 4 more", quoted as the shell would need them.
fn some_names(mut names: Vec<String>) -> String {
    names.sort();
    let more = names.len().saturating_sub(3);
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("{n:?}")).collect();
    match more {
        0 => shown.join(", "),
        n => format!("{} and {n} more", shown.join(", ")),
    }
}

/// The refusal of a directory that is not ours, with a hint where it looks like the
/// cache of s3fs (which keeps `ROOT/.BUCKET.stat` beside `ROOT/BUCKET`).
fn foreign_sentence(dir: &Path, bucket: &str, why: &str) -> String {
    let s3fs = dir
        .parent()
        .is_some_and(|root| root.join(format!(".{bucket}.stat")).exists());
    let hint = if s3fs {
        " It looks like the cache s3fs keeps for this bucket."
    } else {
        ""
    };
    format!(
        "cache dir {} is not empty and is not an s3syncfs cache dir ({why}; no {MARKER}).{hint} \
         s3syncfs removes files it does not need from its cache dir, so it only takes a \
         directory of its own: give a new or empty directory (cache_dir=DIR), or a root \
         for it to make one in (use_cache=ROOT makes ROOT/BUCKET)",
        dir.display()
    )
}

/// Refuses a link, FIFO or anything else of the wrong kind at a name we open by path.
fn check_kinds(dir: &Path) -> anyhow::Result<()> {
    for (name, kind) in OURS {
        let path = dir.join(name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let t = meta.file_type();
        if t.is_symlink() {
            bail!("{}", link_sentence(&path));
        }
        let fits = match kind {
            Kind::File => t.is_file(),
            Kind::Dir => t.is_dir(),
            // A stale socket is replaced at mount; a regular file there is not ours.
            Kind::Socket => t.is_socket(),
        };
        if !fits {
            bail!(
                "{} is not what s3syncfs keeps there (a {}): remove it, find out who put it \
                 there, and mount again",
                path.display(),
                match kind {
                    Kind::File => "regular file",
                    Kind::Dir => "directory",
                    Kind::Socket => "socket",
                }
            );
        }
    }
    Ok(())
}

fn link_sentence(path: &Path) -> String {
    format!(
        "{} is a symbolic link: s3syncfs never writes through a link in its cache dir. \
         Remove it (rm {}), find out who put it there, and mount again",
        path.display(),
        path.display()
    )
}

/// Reads the marker and refuses a cache dir of another bucket or prefix (its state
/// names paths under that prefix, and its pending changes belong there). Another
/// endpoint is taken, and recorded: the same bucket is often reached under several
/// addresses (a proxy, a new hostname).
fn check_marker(dir: &Path, owner: &Owner) -> anyhow::Result<()> {
    let path = dir.join(MARKER);
    let mut text = String::new();
    open_file(&path, OpenOptions::new().read(true), false)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let Ok(marker) = serde_json::from_str::<Marker>(&text) else {
        bail!(
            "{} is not an s3syncfs marker s3syncfs can read: if {} is a cache dir of \
             s3syncfs, remove the marker (rm {}) and mount again; it is then taken as an \
             earlier version's",
            path.display(),
            dir.display(),
            path.display()
        );
    };
    let theirs = marker.owner;
    if (theirs.bucket.as_str(), theirs.prefix.as_str())
        != (owner.bucket.as_str(), owner.prefix.as_str())
    {
        bail!(
            "cache dir {} is the cache of {} (its {MARKER} says so), not of {}: mount {} \
             with it, or give this mount a cache dir of its own (cache_dir=)",
            dir.display(),
            source(&theirs),
            source(owner),
            source(&theirs)
        );
    }
    if theirs.endpoint != owner.endpoint {
        tracing::info!(
            from = %theirs.endpoint,
            to = %owner.endpoint,
            "the cache dir was last used through another endpoint"
        );
        write_marker(dir, owner)?;
    }
    Ok(())
}

fn source(owner: &Owner) -> String {
    match owner.prefix.is_empty() {
        true => owner.bucket.clone(),
        false => format!("{}:{}", owner.bucket, owner.prefix),
    }
}

/// Writes the marker: new (O_EXCL) where there is none, else through a new file
/// renamed over it, so a crash leaves the old marker or the new one.
fn write_marker(dir: &Path, owner: &Owner) -> anyhow::Result<()> {
    let marker = Marker {
        note: NOTE.into(),
        owner: owner.clone(),
    };
    let mut text = serde_json::to_string_pretty(&marker).context("cannot encode the marker")?;
    text.push('\n');
    let path = dir.join(MARKER);
    let write = |path: &Path| -> io::Result<()> {
        let mut file = open_file(path, OpenOptions::new().write(true).create_new(true), false)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    match write(&path) {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => bail!("cannot write {}: {err}", path.display()),
    }
    let new = dir.join(MARKER_NEW);
    match fs::symlink_metadata(&new) {
        // Left by a crash during an earlier rewrite (a link was refused before).
        Ok(m) if m.is_file() => {
            fs::remove_file(&new).with_context(|| format!("cannot remove {}", new.display()))?
        }
        _ => {}
    }
    write(&new).with_context(|| format!("cannot write {}", new.display()))?;
    fs::rename(&new, &path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Opens one of our files in the cache dir: never through a symbolic link (a link
/// gives a sentence saying so), and only a regular file of ours. With `create`, a file
/// that is not there is made with O_EXCL, mode 0600: it is then surely the one we made.
pub fn open_file(path: &Path, options: &OpenOptions, create: bool) -> io::Result<File> {
    let attempt = |new: bool| {
        let mut options = options.clone();
        options
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600);
        if new {
            options.create_new(true);
        }
        options.open(path)
    };
    let file = match attempt(false) {
        Err(err) if create && err.kind() == io::ErrorKind::NotFound => match attempt(true) {
            // Made by another mount a moment ago: opened as it is, and checked below.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => attempt(false),
            made => made,
        },
        opened => opened,
    }
    .map_err(|err| match err.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(err.kind(), link_sentence(path)),
        _ => err,
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file: remove it, find out who put it there, and mount again",
            path.display()
        )));
    }
    if meta.uid() != euid() {
        return Err(io::Error::other(format!(
            "{} belongs to uid {}, not to uid {}: remove it, find out who put it there, and \
             mount again",
            path.display(),
            meta.uid(),
            euid()
        )));
    }
    Ok(file)
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
#[path = "cache_dir_tests.rs"]
mod tests;
