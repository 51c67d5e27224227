//! Atomic, durable output: every file and folder graft writes appears whole or not at all.
//! Contents go to a temporary sibling (same folder, so the rename cannot cross file systems),
//! which is fsync'd, renamed over the destination, and then the folder is fsync'd — a rename is
//! only durable once the folder's entry is. A failure or an early return removes the temporary
//! sibling. Files end with the permissions the user's umask gives (0666 & !umask), also those a
//! library wrote through a private 0600 temp file (the safetensors crate does).
//!
//! Used by every writer: model and adapter folders, checkpoints, caches, merge outputs, the CLI's
//! JSONL and report files.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` atomically and durably (the folder is created when missing).
pub fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_file_with(path, |file| file.write_all(contents))
}

/// Like [`write_file`], for contents written by `fill` into the open temporary file.
pub fn write_file_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        fill(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        drop(file);
        set_default_mode(&tmp)?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Moves a file written elsewhere (`tmp`, in the same folder as `path`) into place durably.
pub fn commit_file(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    set_default_mode(tmp)?;
    std::fs::rename(tmp, path)?;
    sync_dir(parent(path))
}

/// A folder being built beside its destination; [`StagedDir::commit`] renames it into place,
/// dropping it uncommitted removes it.
pub struct StagedDir {
    tmp: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Starts an empty temporary folder beside `out` (a stale one from a killed run is removed).
    pub fn new(out: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(parent(out))?;
        let tmp = temp_sibling(out);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir(&tmp)?;
        Ok(Self {
            tmp,
            out: out.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write the folder's files.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// fsyncs every file and folder inside, renames the folder to its destination (which must
    /// not exist) and fsyncs the parent.
    pub fn commit(mut self) -> io::Result<()> {
        sync_tree(&self.tmp)?;
        if self.out.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: already exists", self.out.display()),
            ));
        }
        std::fs::rename(&self.tmp, &self.out)?;
        self.committed = true;
        sync_dir(parent(&self.out))
    }

    /// Like [`StagedDir::commit`], replacing an existing destination ([`replace_dir`]).
    pub fn commit_replacing(mut self) -> io::Result<()> {
        sync_tree(&self.tmp)?;
        replace_dir(&self.tmp, &self.out)?;
        self.committed = true;
        Ok(())
    }
}

/// Moves the complete folder `new` to `dir` (same parent folder), replacing what is there: the
/// old folder is renamed aside first and removed only after the new one is in place, so at every
/// instant one complete folder exists under a known name.
pub fn replace_dir(new: &Path, dir: &Path) -> io::Result<()> {
    let old = dir.exists().then(|| sibling(dir, "old"));
    if let Some(old) = &old {
        if old.exists() {
            std::fs::remove_dir_all(old)?;
        }
        std::fs::rename(dir, old)?;
    }
    std::fs::rename(new, dir)?;
    sync_dir(parent(dir))?;
    if let Some(old) = old {
        std::fs::remove_dir_all(old)?;
    }
    Ok(())
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    parent(path).join(format!(".{name}.{what}-{}", std::process::id()))
}

/// `.NAME.tmp-PID` beside `path`: hidden, and distinct per process.
pub fn temp_sibling(path: &Path) -> PathBuf {
    sibling(path, "tmp")
}

/// Removes the staging files and folders (`.NAME.tmp-PID`, `.NAME.old-PID`) in `dir` left by
/// processes that no longer run (killed mid-write); returns how many went.
pub fn sweep_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let pid = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-").or_else(|| n.rsplit_once(".old-")))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if alive || !Path::new("/proc/self").exists() {
            continue;
        }
        let path = e.path();
        let gone = match path.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
        removed += gone.is_ok() as usize;
    }
    removed
}

/// fsyncs every file below `dir` (giving each the umask's mode), then the folders themselves.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            set_default_mode(&path)?;
            File::open(&path)?.sync_all()?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // Folders cannot be opened for syncing on every platform; where they can, an error is real.
    match File::open(dir) {
        Ok(f) => f.sync_all(),
        Err(_) if cfg!(not(unix)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn set_default_mode(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666 & !umask()))
}

#[cfg(not(unix))]
fn set_default_mode(_: &Path) -> io::Result<()> {
    Ok(())
}

/// The process's umask, read once from /proc (the umask call would have to change it to read it,
/// racing other threads' file creation); 022 where /proc does not say.
#[cfg(unix)]
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_appear_whole_with_the_umask_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/out.json");
        write_file(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert_eq!(mode(&path), 0o666 & !umask());
        let failed = write_file_with(&path, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"{}", "old contents kept");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left");
    }

    #[test]
    fn staged_folders_commit_whole_or_vanish() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("model");
        {
            let staged = StagedDir::new(&out).unwrap();
            std::fs::write(staged.path().join("a"), b"x").unwrap();
        }
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

        let staged = StagedDir::new(&out).unwrap();
        // A private temp file, as safetensors writes: it comes out with the umask's mode.
        let f = staged.path().join("model.safetensors");
        std::fs::write(&f, b"w").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        staged.commit().unwrap();
        assert_eq!(mode(&out.join("model.safetensors")), 0o666 & !umask());

        let again = StagedDir::new(&out).unwrap();
        assert!(
            again.commit().is_err(),
            "an existing folder is not replaced"
        );
        let newer = StagedDir::new(&out).unwrap();
        std::fs::write(newer.path().join("b"), b"y").unwrap();
        newer.commit_replacing().unwrap();
        assert!(out.join("b").exists() && !out.join("model.safetensors").exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
