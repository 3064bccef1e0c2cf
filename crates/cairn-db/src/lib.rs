//! Opening redb databases so that a crash during their first creation leaves nothing half-made.
//!
//! redb builds a new database in place: it sizes the file, writes the header without its magic
//! number, syncs, and only then writes the magic number. A process killed between the two leaves
//! a non-empty file without the magic, and every later open of it fails with `InvalidData`: a
//! server SIGKILLed during its first start would never start again (the crash test met this).
//! [`create`] builds a new database under a temporary name and renames it into place once redb
//! has made it whole, so the real name only ever holds a complete database. An existing database
//! is opened as redb opens it (repairing it after an unclean shutdown).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Builder, Database, DatabaseError, StorageError};

/// The page cache a database gets when the process set none for its file name (redb's own
/// default is 1 GiB per database, which five databases under load did fill).
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

static CACHE_SIZES: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// Sets the page cache of every database later opened by [`create`] whose file is named
/// `file_name` — either `NAME.redb` or `DIR/NAME.redb` (its directory's name and its own, which
/// wins) — the server splits its memory budget this way.
pub fn set_cache_size(file_name: &str, bytes: usize) {
    CACHE_SIZES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(file_name.to_string(), bytes.max(1 << 20));
}

/// The page cache [`create`] gives the database at `path`.
pub fn cache_size(path: &Path) -> usize {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let dir = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let sizes = CACHE_SIZES.lock().unwrap_or_else(|e| e.into_inner());
    sizes
        .get(&format!("{dir}/{name}"))
        .or_else(|| sizes.get(name))
        .copied()
        .unwrap_or(DEFAULT_CACHE_BYTES)
}

/// Opens the database at `path`, creating it if there is none, with the page cache set for
/// its file name ([`set_cache_size`]); see the crate docs.
pub fn create(path: &Path) -> Result<Database, DatabaseError> {
    create_with(Builder::new().set_cache_size(cache_size(path)), path)
}

/// [`create`] with `builder`'s settings (cache size, …).
pub fn create_with(builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
    match std::fs::metadata(path) {
        // An empty file never held data (an older binary's creation cut short before its
        // first write): built again like a missing one, not in place.
        Ok(m) if m.len() > 0 => return builder.create(path),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let tmp = creating_name(path);
    // A leftover is a creation a crash interrupted: it never held data.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    // redb syncs the finished header before `create` returns.
    drop(builder.create(&tmp)?);
    std::fs::rename(&tmp, path).map_err(io_err)?;
    sync_parent(path).map_err(io_err)?;
    builder.create(path)
}

fn creating_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

fn io_err(e: io::Error) -> DatabaseError {
    DatabaseError::Storage(StorageError::Io(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_by_name_and_directory() {
        set_cache_size("t-one.redb", 3 << 20);
        set_cache_size("store/t-two.redb", 5 << 20);
        assert_eq!(cache_size(Path::new("/x/y/t-one.redb")), 3 << 20);
        assert_eq!(cache_size(Path::new("/x/store/t-two.redb")), 5 << 20);
        assert_eq!(
            cache_size(Path::new("/x/api/t-two.redb")),
            DEFAULT_CACHE_BYTES
        );
    }
    use redb::{ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    /// What a kill between redb's sizing of a new file and its magic number leaves behind.
    fn half_made(path: &Path) {
        std::fs::write(path, vec![0u8; 1 << 16]).unwrap();
    }

    #[test]
    fn redb_alone_cannot_open_a_half_made_file() {
        // Why this crate exists: if this starts passing, redb has fixed its creation.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.redb");
        half_made(&p);
        assert!(Database::create(&p).is_err());
    }

    #[test]
    fn an_interrupted_creation_is_redone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.redb");
        half_made(&creating_name(&p));
        let db = create(&p).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(T).unwrap().insert("a", 1).unwrap();
        w.commit().unwrap();
        drop(db);
        assert!(!creating_name(&p).exists());
        let db = create(&p).unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(
            r.open_table(T).unwrap().get("a").unwrap().unwrap().value(),
            1
        );
    }

    #[test]
    fn an_empty_file_is_built_again_under_a_temporary_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.redb");
        std::fs::write(&p, b"").unwrap();
        let db = create(&p).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(T).unwrap().insert("a", 2).unwrap();
        w.commit().unwrap();
    }

    #[test]
    fn an_existing_database_is_opened_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.redb");
        {
            let db = create_with(Builder::new().set_cache_size(1 << 20), &p).unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(T).unwrap().insert("k", 7).unwrap();
            w.commit().unwrap();
        }
        // A stale leftover next to a real database is not touched into it.
        half_made(&creating_name(&p));
        let db = create(&p).unwrap();
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        assert_eq!(t.get("k").unwrap().unwrap().value(), 7);
        assert_eq!(t.len().unwrap(), 1);
    }
}
