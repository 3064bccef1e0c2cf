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
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, String> {
        let db = cairn_db::create(path).map_err(|e| e.to_string())?;
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(META).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Meta { db })
    }

    /// The database, for tables of their own (the audit-id index).
    pub fn db(&self) -> &Database {
        &self.db
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        let tx = self.db.begin_read().map_err(ApiError::internal)?;
        let t = tx.open_table(META).map_err(ApiError::internal)?;
        match t.get(key).map_err(ApiError::internal)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(v.value()).map_err(ApiError::internal)?,
            )),
            None => Ok(None),
        }
    }

    pub fn put<T: Serialize>(&self, key: &str, v: &T) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(v).map_err(ApiError::internal)?;
        let tx = self.db.begin_write().map_err(ApiError::internal)?;
        {
            let mut t = tx.open_table(META).map_err(ApiError::internal)?;
            t.insert(key, bytes.as_slice())
                .map_err(ApiError::internal)?;
        }
        tx.commit().map_err(ApiError::internal)
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
