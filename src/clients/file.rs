//! Client records from a file (TOML or JSON), re-read when it changes or on SIGHUP (driven by
//! [`crate::background::Reloader`]).
//!
//! A new version is parsed and validated whole before it replaces the records in force (one atomic
//! swap: requests see either the old or the new set, never a mix). A bad file is logged and
//! ignored; the previous records stay.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::record::{ClientKey, ClientRecord};
use super::secret::Profile;
use super::set::{parse_client_file, ClientSet, FileFormat};

/// What identifies a version of the file on disk.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads, parses and validates a client file. Parse errors give the line, never the line's text
/// (which could hold a secret).
pub fn load_file(path: &Path) -> Result<ClientSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let env = |k: &str| std::env::var(k).ok();
    // Parse errors give the position, never the line's text (it could hold a secret).
    parse_client_file(&text, FileFormat::of(path), &env)
}

/// The records of one client file, swapped atomically on reload.
pub struct FileStore {
    path: PathBuf,
    current: ArcSwap<ClientSet>,
    stamp: Mutex<Stamp>,
    generation: AtomicU64,
}

impl FileStore {
    /// Loads the file; an invalid file is an error (at start, the gateway must not run without it).
    pub fn open(path: &Path) -> Result<FileStore, String> {
        let before = stamp(path);
        let set = load_file(path)?;
        Ok(FileStore {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(set),
            stamp: Mutex::new(before),
            generation: AtomicU64::new(1),
        })
    }

    pub fn get(&self, key: &ClientKey) -> Option<Arc<ClientRecord>> {
        self.current.load().get(key)
    }

    /// The kind and cost of secret most records use.
    pub fn typical_profile(&self) -> Option<Profile> {
        self.current.load().typical_profile
    }

    /// Calls `f` with every record in force.
    pub fn for_each(&self, f: &mut dyn FnMut(&ClientRecord)) {
        for r in self.current.load().iter() {
            f(r);
        }
    }

    pub fn len(&self) -> usize {
        self.current.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many versions have been put in force (1 after start).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Re-reads the file if it changed on disk (or always, with `force`). `Ok(true)` when new
    /// records are in force; `Err` when the file was refused and the previous records stay.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let now = stamp(&self.path);
        {
            let seen = self
                .stamp
                .lock()
                .map_err(|_| "reload state poisoned".to_string())?;
            if !force && *seen == now {
                return Ok(false);
            }
        }
        // Remember the stamp even when the file is refused, so that a bad file is reported once.
        if let Ok(mut seen) = self.stamp.lock() {
            *seen = now;
        }
        let set = load_file(&self.path)?;
        self.current.store(Arc::new(set));
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ONE: &str = "[[clients]]\nenv_id = \"e\"\nclient_id = \"a\"\nauth_methods = [\"none\"]\n";
    const TWO: &str = "[[clients]]\nenv_id = \"e\"\nclient_id = \"b\"\nauth_methods = [\"none\"]\n";

    /// A client file in a directory of its own, removed when dropped.
    struct TempFile(PathBuf);

    impl std::ops::Deref for TempFile {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempFile {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp_file(name: &str, text: &str) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("tokengate-file-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = TempFile(dir.join("clients.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reload_swaps_in_a_changed_file() {
        let p = temp_file("swap", ONE);
        let store = FileStore::open(&p).unwrap();
        assert!(store.get(&ClientKey::new("e", b"a")).is_some());
        assert_eq!(store.reload(false), Ok(false));
        std::fs::write(&p, format!("{ONE}{TWO}")).unwrap();
        assert_eq!(store.reload(true), Ok(true));
        assert!(store.get(&ClientKey::new("e", b"b")).is_some());
        assert_eq!(store.generation(), 2);
    }

    #[test]
    fn a_bad_file_is_refused_and_the_previous_records_stay() {
        let p = temp_file("bad", ONE);
        let store = FileStore::open(&p).unwrap();
        std::fs::write(
            &p,
            "[[clients]]\nenv_id = \"e\"\nsecret = \"plain:Hunter2\"\nbroken",
        )
        .unwrap();
        let e = store.reload(true).unwrap_err();
        assert!(!e.contains("Hunter2"), "{e}");
        assert!(store.get(&ClientKey::new("e", b"a")).is_some());
        assert_eq!(store.generation(), 1);
    }

    #[test]
    fn an_invalid_file_at_start_is_an_error() {
        let p = temp_file("start", "[[clients]]\nenv_id = \"e\"\n");
        assert!(FileStore::open(&p).is_err());
    }
}
