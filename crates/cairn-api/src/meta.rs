//! Control-plane metadata the trail engine does not need for delivery: trail tags, insight
//! selectors, CloudTrail Lake channels. A small embedded table of JSON values.

use crate::protocol::ApiError;
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub struct Meta {
    db: Database,
    cache: std::sync::Mutex<Cache>,
}

/// The values `get` read last (absent ones too: most trails have no CloudWatch Logs target,
/// and GetTrailStatus asks on every call). Every write drops the keys it wrote and moves
/// `generation`, and a read that began before a write does not fill it, so it never answers
/// older than the table. Bounded in entries and in each entry's size, and emptied when full
/// (keys can come from clients).
#[derive(Default)]
struct Cache {
    generation: u64,
    values: std::collections::HashMap<String, Option<std::sync::Arc<[u8]>>>,
}

const CACHE_ENTRIES: usize = 4096;
/// Larger entries (key and value) are read from the table every time: a client can make a
/// read of a key it chose (a bucket's name), so the cache holds at most 4,096 × 1 KiB.
const CACHE_ITEM_BYTES: usize = 1024;

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, String> {
        let db = cairn_db::create(path).map_err(|e| e.to_string())?;
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(META).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Meta {
            db,
            cache: Default::default(),
        })
    }

    /// The database, for tables of their own (the audit-id index).
    pub fn db(&self) -> &Database {
        &self.db
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.read_through(key, || {})?
            .map(|b| serde_json::from_slice(&b).map_err(ApiError::internal))
            .transpose()
    }

    /// `key`'s stored bytes, from the cache or the table; `between` runs after a table read
    /// and before the cache is filled with it (a test's write goes there).
    fn read_through(
        &self,
        key: &str,
        between: impl FnOnce(),
    ) -> Result<Option<std::sync::Arc<[u8]>>, ApiError> {
        let generation = {
            let c = self.cache();
            if let Some(v) = c.values.get(key) {
                return Ok(v.clone());
            }
            c.generation
        };
        let value: Option<std::sync::Arc<[u8]>> = {
            let tx = self.db.begin_read().map_err(ApiError::internal)?;
            let t = tx.open_table(META).map_err(ApiError::internal)?;
            t.get(key)
                .map_err(ApiError::internal)?
                .map(|v| v.value().into())
        };
        between();
        let size = key.len() + value.as_ref().map_or(0, |v| v.len());
        let mut c = self.cache();
        if c.generation == generation && size <= CACHE_ITEM_BYTES {
            if c.values.len() >= CACHE_ENTRIES {
                c.values.clear();
            }
            c.values.insert(key.to_string(), value.clone());
        }
        Ok(value)
    }

    /// After every write, committed or not: the keys it wrote (`keys`, and every key under
    /// `prefix` when that is not empty) are read from the table again, and no read that
    /// began before it fills the cache.
    fn written(&self, keys: &[&str], prefix: &str) {
        let mut c = self.cache();
        c.generation += 1;
        for k in keys {
            c.values.remove(*k);
        }
        if !prefix.is_empty() {
            c.values.retain(|k, _| !k.starts_with(prefix));
        }
    }

    pub fn put<T: Serialize>(&self, key: &str, v: &T) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(v).map_err(ApiError::internal)?;
        let put = (|| {
            let tx = self.db.begin_write().map_err(ApiError::internal)?;
            {
                let mut t = tx.open_table(META).map_err(ApiError::internal)?;
                t.insert(key, bytes.as_slice())
                    .map_err(ApiError::internal)?;
            }
            tx.commit().map_err(ApiError::internal)
        })();
        self.written(&[key], "");
        put
    }

    pub fn delete(&self, key: &str) -> Result<(), ApiError> {
        self.delete_all(&[key])
    }

    /// Deletes every key of `keys` in one transaction: all go, or (after a crash) none.
    pub fn delete_all(&self, keys: &[&str]) -> Result<(), ApiError> {
        self.delete_all_under(keys, "")
    }

    /// Deletes `keys` and, when `prefix` is not empty, every key starting with it, in one
    /// transaction.
    pub fn delete_all_under(&self, keys: &[&str], prefix: &str) -> Result<(), ApiError> {
        let deleted = self.remove_under(keys, prefix);
        self.written(keys, prefix);
        deleted
    }

    fn remove_under(&self, keys: &[&str], prefix: &str) -> Result<(), ApiError> {
        let tx = self.db.begin_write().map_err(ApiError::internal)?;
        {
            let mut t = tx.open_table(META).map_err(ApiError::internal)?;
            for key in keys {
                t.remove(*key).map_err(ApiError::internal)?;
            }
            if !prefix.is_empty() {
                let under: Vec<String> = t
                    .range(prefix..)
                    .map_err(ApiError::internal)?
                    .map_while(|e| {
                        e.ok()
                            .map(|(k, _)| k.value().to_string())
                            .filter(|k| k.starts_with(prefix))
                    })
                    .collect();
                for key in under {
                    t.remove(key.as_str()).map_err(ApiError::internal)?;
                }
            }
        }
        tx.commit().map_err(ApiError::internal)
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, ApiError> {
        let tx = self.db.begin_read().map_err(ApiError::internal)?;
        let t = tx.open_table(META).map_err(ApiError::internal)?;
        let mut out = Vec::new();
        for row in t.range(prefix..).map_err(ApiError::internal)? {
            let (k, v) = row.map_err(ApiError::internal)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((
                k.value().to_string(),
                serde_json::from_slice(v.value()).map_err(ApiError::internal)?,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
        assert_eq!(m.get::<String>("a").unwrap(), None);
        m.put("a", &"one").unwrap();
        assert_eq!(m.get::<String>("a").unwrap().as_deref(), Some("one"));
        assert_eq!(m.get::<String>("a").unwrap().as_deref(), Some("one"));
        m.put("a", &"two").unwrap();
        assert_eq!(m.get::<String>("a").unwrap().as_deref(), Some("two"));
        m.put("p/1", &"x").unwrap();
        assert_eq!(m.get::<String>("p/1").unwrap().as_deref(), Some("x"));
        m.delete_all_under(&["a"], "p/").unwrap();
        assert_eq!(m.get::<String>("a").unwrap(), None);
        assert_eq!(m.get::<String>("p/1").unwrap(), None);
        m.put("a", &"three").unwrap();
        assert_eq!(m.get::<String>("a").unwrap().as_deref(), Some("three"));
        // A value of the wrong shape is an error, cached or not.
        assert!(m.get::<u32>("a").is_err());
        assert!(m.get::<u32>("a").is_err());
    }

    #[test]
    fn a_read_that_began_before_a_write_does_not_fill_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
        m.put("a", &"old").unwrap();
        // The table is read, then a write lands before the read fills the cache.
        let seen = m.read_through("a", || m.put("a", &"new").unwrap()).unwrap();
        assert_eq!(seen.as_deref(), Some(&b"\"old\""[..]));
        assert_eq!(m.get::<String>("a").unwrap().as_deref(), Some("new"));
        // The same for a key that was absent.
        let seen = m
            .read_through("b", || m.put("b", &"made").unwrap())
            .unwrap();
        assert_eq!(seen, None);
        assert_eq!(m.get::<String>("b").unwrap().as_deref(), Some("made"));
        // A write of the key drops it from the cache; then a delete lands between the
        // table read and the fill.
        m.put("b", &"again").unwrap();
        let seen = m.read_through("b", || m.delete("b").unwrap()).unwrap();
        assert!(seen.is_some());
        assert_eq!(m.get::<String>("b").unwrap(), None);
    }

    #[test]
    fn a_write_keeps_other_keys_cached_and_drops_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
        m.put("a", &"1").unwrap();
        m.put("p/x", &"2").unwrap();
        m.put("q", &"3").unwrap();
        for k in ["a", "p/x", "q"] {
            m.get::<String>(k).unwrap();
        }
        m.put("a", &"4").unwrap();
        assert!(!m.cache().values.contains_key("a"));
        assert!(m.cache().values.contains_key("q"));
        m.delete_all_under(&["q"], "p/").unwrap();
        assert!(m.cache().values.is_empty());
        assert_eq!(m.get::<String>("a").unwrap().as_deref(), Some("4"));
        assert_eq!(m.get::<String>("p/x").unwrap(), None);
        assert_eq!(m.get::<String>("q").unwrap(), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
        for i in 0..CACHE_ENTRIES * 2 + 3 {
            assert_eq!(m.get::<String>(&format!("k{i}")).unwrap(), None);
            assert!(m.cache().values.len() <= CACHE_ENTRIES);
        }
        // A key a client could make long is not kept, nor is a large value.
        m.put("c", &"other").unwrap();
        let long = "b".repeat(CACHE_ITEM_BYTES + 1);
        assert_eq!(m.get::<String>(&long).unwrap(), None);
        assert!(!m.cache().values.contains_key(&long));
        let big = "v".repeat(CACHE_ITEM_BYTES);
        m.put("big", &big).unwrap();
        assert_eq!(m.get::<String>("big").unwrap(), Some(big));
        assert!(!m.cache().values.contains_key("big"));
    }
}
