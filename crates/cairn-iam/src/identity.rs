//! The account's identities: the root access keys, IAM users with access keys and inline
//! policies, roles with trust policies, and temporary credentials issued by AssumeRole.
//!
//! Everything lives in memory (the directory is small and read on every request) and is
//! written through to an embedded database on every change. Secret access keys are sealed
//! with a [`Sealer`] before they reach the disk; session tokens are stored only as hashes.

use crate::policy::{MalformedPolicy, Policy};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("iam");

/// Encrypts secrets at rest (implemented over the installation's root key).
pub trait Sealer: Send + Sync {
    fn seal(&self, plaintext: &[u8], context: &[u8]) -> std::result::Result<Vec<u8>, String>;
    fn open(&self, sealed: &[u8], context: &[u8]) -> std::result::Result<Vec<u8>, String>;
}

/// IAM's modelled errors; `code()` gives the wire code and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    Validation(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IamError {
    pub fn code(&self) -> (&'static str, u16) {
        match self {
            IamError::NoSuchEntity(_) => ("NoSuchEntity", 404),
            IamError::EntityAlreadyExists(_) => ("EntityAlreadyExists", 409),
            IamError::DeleteConflict(_) => ("DeleteConflict", 409),
            IamError::LimitExceeded(_) => ("LimitExceeded", 409),
            IamError::MalformedPolicyDocument(_) => ("MalformedPolicyDocument", 400),
            IamError::Validation(_) => ("ValidationError", 400),
            IamError::Internal(_) => ("ServiceFailure", 500),
        }
    }
}

impl From<MalformedPolicy> for IamError {
    fn from(e: MalformedPolicy) -> Self {
        IamError::MalformedPolicyDocument(e.0)
    }
}

fn internal(e: impl std::fmt::Display) -> IamError {
    IamError::Internal(e.to_string())
}

pub type Result<T> = std::result::Result<T, IamError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub user_id: String,
    pub path: String,
    pub created: DateTime<Utc>,
    /// Inline policies: name → document text.
    pub policies: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub role_id: String,
    pub path: String,
    pub created: DateTime<Utc>,
    pub trust_policy: String,
    pub description: Option<String>,
    pub max_session_duration: i64,
    pub policies: BTreeMap<String, String>,
}

/// A session issued by AssumeRole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub role: String,
    pub role_id: String,
    pub session_name: String,
    pub created: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// Hex SHA-256 of the session token.
    pub token_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyOwner {
    Root,
    User(String),
    Session(Session),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }
}

/// An access key as stored (the secret sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    id: String,
    owner: KeyOwner,
    status: KeyStatus,
    created: DateTime<Utc>,
    /// base64 of the sealed secret.
    sealed_secret: String,
}

/// An access key with its secret, as the authenticator needs it.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub owner: KeyOwner,
    pub status: KeyStatus,
    pub created: DateTime<Utc>,
    pub secret: String,
}

/// Temporary credentials returned by AssumeRole.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: DateTime<Utc>,
    pub role: Role,
    pub session_name: String,
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    keys: HashMap<String, AccessKey>,
    /// Parsed inline policies, by "user/NAME" or "role/NAME".
    parsed: HashMap<String, Arc<Vec<Policy>>>,
}

/// The account's identity directory.
pub struct Directory {
    account: String,
    db: Database,
    sealer: Arc<dyn Sealer>,
    state: RwLock<State>,
}

/// Who holds inline policies: a user or a role (one path serves both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    User,
    Role,
}

impl Holder {
    /// `user` or `role`, as IAM words them.
    pub fn kind(self) -> &'static str {
        match self {
            Holder::User => "user",
            Holder::Role => "role",
        }
    }

    /// `User` or `Role`.
    fn title(self) -> &'static str {
        match self {
            Holder::User => "User",
            Holder::Role => "Role",
        }
    }
}

/// Largest number of access keys per user (AWS: 2).
pub const MAX_KEYS_PER_USER: usize = 2;

fn random_id(prefix: &str, n: usize) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut r = rand::thread_rng();
    let mut s = prefix.to_string();
    for _ in 0..n {
        s.push(ALPHA[r.gen_range(0..ALPHA.len())] as char);
    }
    s
}

fn random_secret() -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut r = rand::thread_rng();
    (0..40)
        .map(|_| ALPHA[r.gen_range(0..ALPHA.len())] as char)
        .collect()
}

fn secret_context(id: &str) -> Vec<u8> {
    format!("cairn-iam-secret:{id}").into_bytes()
}

/// IAM's name rules for users and roles: 1–64 (roles 64) of `[\w+=,.@-]`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if name.is_empty() || name.len() > 64 || !ok_chars {
        return Err(IamError::Validation(format!(
            "1 validation error detected: Value '{name}' at '{kind}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        )));
    }
    Ok(())
}

/// IAM's path rule: `/`, or `/…/` of printable ASCII, at most 512 characters.
pub fn validate_path(path: &str) -> Result<()> {
    let ok = path == "/"
        || (path.len() <= 512
            && path.len() >= 2
            && path.starts_with('/')
            && path.ends_with('/')
            && !path.contains("//")
            && path.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c)));
    if !ok {
        return Err(IamError::Validation(format!(
            "1 validation error detected: Value '{path}' at 'path' failed to satisfy constraint: Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007E]+\\u002F)"
        )));
    }
    Ok(())
}

impl User {
    /// `arn:aws:iam::ACCOUNT:user/PATH/NAME` (the path is part of the ARN policies match).
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:user{}{}", self.path, self.name)
    }
}

impl Role {
    /// `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
    pub fn arn(&self, account: &str) -> String {
        format!("arn:aws:iam::{account}:role{}{}", self.path, self.name)
    }
}

impl Directory {
    /// Opens (or creates) the directory database at `path`.
    pub fn open(path: &Path, account: &str, sealer: Arc<dyn Sealer>) -> Result<Directory> {
        let db = cairn_db::create(path).map_err(internal)?;
        {
            let tx = db.begin_write().map_err(internal)?;
            tx.open_table(ENTITIES).map_err(internal)?;
            tx.commit().map_err(internal)?;
        }
        let mut state = State::default();
        {
            let tx = db.begin_read().map_err(internal)?;
            let t = tx.open_table(ENTITIES).map_err(internal)?;
            for row in t.iter().map_err(internal)? {
                let (k, v) = row.map_err(internal)?;
                let (k, v) = (k.value(), v.value());
                if let Some(name) = k.strip_prefix("user/") {
                    let u: User = serde_json::from_slice(v).map_err(internal)?;
                    state.users.insert(name.to_string(), u);
                } else if let Some(name) = k.strip_prefix("role/") {
                    let r: Role = serde_json::from_slice(v).map_err(internal)?;
                    state.roles.insert(name.to_string(), r);
                } else if let Some(id) = k.strip_prefix("key/") {
                    let sk: StoredKey = serde_json::from_slice(v).map_err(internal)?;
                    let sealed = base64::engine::general_purpose::STANDARD
                        .decode(&sk.sealed_secret)
                        .map_err(internal)?;
                    let secret = sealer
                        .open(&sealed, &secret_context(id))
                        .map_err(|e| internal(format!("unsealing access key {id}: {e}")))?;
                    state.keys.insert(
                        id.to_string(),
                        AccessKey {
                            id: sk.id,
                            owner: sk.owner,
                            status: sk.status,
                            created: sk.created,
                            secret: String::from_utf8(secret).map_err(internal)?,
                        },
                    );
                }
            }
        }
        let dir = Directory {
            account: account.to_string(),
            db,
            sealer,
            state: RwLock::new(state),
        };
        {
            let mut st = dir.write();
            let users: Vec<User> = st.users.values().cloned().collect();
            for u in users {
                Self::reparse(&mut st, &format!("user/{}", u.name), &u.policies);
            }
            let roles: Vec<Role> = st.roles.values().cloned().collect();
            for r in roles {
                Self::reparse(&mut st, &format!("role/{}", r.name), &r.policies);
            }
        }
        Ok(dir)
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn reparse(st: &mut State, key: &str, docs: &BTreeMap<String, String>) {
        let parsed: Vec<Policy> = docs
            .values()
            .filter_map(|d| Policy::parse(d).ok())
            .collect();
        st.parsed.insert(key.to_string(), Arc::new(parsed));
    }

    /// Writes entities through to disk: `(key, Some(json))` upserts, `(key, None)` deletes.
    fn persist(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<()> {
        let tx = self.db.begin_write().map_err(internal)?;
        {
            let mut t = tx.open_table(ENTITIES).map_err(internal)?;
            for (k, v) in changes {
                match v {
                    Some(v) => {
                        t.insert(k.as_str(), v.as_slice()).map_err(internal)?;
                    }
                    None => {
                        t.remove(k.as_str()).map_err(internal)?;
                    }
                }
            }
        }
        tx.commit().map_err(internal)
    }

    fn key_record(&self, k: &AccessKey) -> Result<(String, Option<Vec<u8>>)> {
        let sealed = self
            .sealer
            .seal(k.secret.as_bytes(), &secret_context(&k.id))
            .map_err(internal)?;
        let sk = StoredKey {
            id: k.id.clone(),
            owner: k.owner.clone(),
            status: k.status,
            created: k.created,
            sealed_secret: base64::engine::general_purpose::STANDARD.encode(sealed),
        };
        Ok((
            format!("key/{}", k.id),
            Some(serde_json::to_vec(&sk).map_err(internal)?),
        ))
    }

    fn json<T: Serialize>(key: String, v: &T) -> Result<(String, Option<Vec<u8>>)> {
        Ok((key, Some(serde_json::to_vec(v).map_err(internal)?)))
    }

    /// The access key `id`, if it exists (any status; expired sessions are not returned).
    pub fn access_key(&self, id: &str, now: DateTime<Utc>) -> Option<AccessKey> {
        let k = self.read().keys.get(id).cloned()?;
        if let KeyOwner::Session(s) = &k.owner {
            if s.expires <= now {
                return None;
            }
        }
        Some(k)
    }

    /// Whether `token` is the session token of session key `k` (constant-time on hashes).
    pub fn session_token_matches(k: &AccessKey, token: &str) -> bool {
        match &k.owner {
            KeyOwner::Session(s) => {
                let got = crate::sigv4::sha256_hex(token.as_bytes());
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    got.as_bytes(),
                    s.token_sha256.as_bytes(),
                )
                .is_ok()
            }
            _ => false,
        }
    }

    pub fn root_keys(&self) -> Vec<AccessKey> {
        let mut v: Vec<AccessKey> = self
            .read()
            .keys
            .values()
            .filter(|k| k.owner == KeyOwner::Root)
            .cloned()
            .collect();
        v.sort_by_key(|k| k.created);
        v
    }

    /// Installs a root access key. With `given` the caller chooses id and secret (automation);
    /// otherwise both are generated. Returns the key.
    pub fn add_root_key(
        &self,
        given: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<AccessKey> {
        let (id, secret) = match given {
            Some((id, secret)) => {
                if id.len() < 16 || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(IamError::Validation(
                        "access key id must be 16-128 letters and digits".into(),
                    ));
                }
                if secret.len() < 16 {
                    return Err(IamError::Validation(
                        "secret access key must be at least 16 characters".into(),
                    ));
                }
                (id.to_string(), secret.to_string())
            }
            None => (random_id("AKIA", 16), random_secret()),
        };
        let k = AccessKey {
            id: id.clone(),
            owner: KeyOwner::Root,
            status: KeyStatus::Active,
            created: now,
            secret,
        };
        let mut st = self.write();
        if let Some(existing) = st.keys.get(&id) {
            if existing.owner == KeyOwner::Root && existing.secret == k.secret {
                return Ok(existing.clone());
            }
            return Err(IamError::EntityAlreadyExists(format!(
                "Access key {id} already exists."
            )));
        }
        self.persist(&[self.key_record(&k)?])?;
        st.keys.insert(id, k.clone());
        Ok(k)
    }

    // ---- users ----

    pub fn create_user(&self, name: &str, path: Option<&str>, now: DateTime<Utc>) -> Result<User> {
        let u = self.prepare_user(name, path, now)?;
        self.insert_user(&u)?;
        Ok(u)
    }

    /// A new user, checked and given its id, but not yet in the directory: the caller makes
    /// it with [`Directory::insert_user`] once the request's event is durable.
    pub fn prepare_user(&self, name: &str, path: Option<&str>, now: DateTime<Utc>) -> Result<User> {
        validate_name("userName", name)?;
        validate_path(path.unwrap_or("/"))?;
        Self::name_free(&self.read().users, Holder::User, name)?;
        Ok(User {
            name: name.into(),
            user_id: random_id("AIDA", 17),
            path: path.unwrap_or("/").into(),
            created: now,
            policies: BTreeMap::new(),
        })
    }

    /// IAM names are unique whatever their case.
    fn name_free<T>(taken: &BTreeMap<String, T>, holder: Holder, name: &str) -> Result<()> {
        if taken.keys().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(IamError::EntityAlreadyExists(format!(
                "{} with name {name} already exists.",
                holder.title()
            )));
        }
        Ok(())
    }

    /// Makes a prepared user (checked again: the name must still be free).
    pub fn insert_user(&self, u: &User) -> Result<()> {
        self.insert_entity(Holder::User, &u.name, u, &u.policies, |st| &mut st.users)
    }

    /// Makes a prepared user or role: its name still free, its record durable, its inline
    /// policies parsed.
    fn insert_entity<T: Serialize + Clone>(
        &self,
        holder: Holder,
        name: &str,
        value: &T,
        policies: &BTreeMap<String, String>,
        table: impl Fn(&mut State) -> &mut BTreeMap<String, T>,
    ) -> Result<()> {
        let mut st = self.write();
        Self::name_free(table(&mut st), holder, name)?;
        let key = format!("{}/{name}", holder.kind());
        self.persist(&[Self::json(key.clone(), value)?])?;
        table(&mut st).insert(name.into(), value.clone());
        Self::reparse(&mut st, &key, policies);
        Ok(())
    }

    fn no_user(name: &str) -> IamError {
        IamError::NoSuchEntity(format!("The user with name {name} cannot be found."))
    }

    pub fn get_user(&self, name: &str) -> Result<User> {
        self.read()
            .users
            .get(name)
            .cloned()
            .ok_or_else(|| Self::no_user(name))
    }

    pub fn list_users(&self) -> Vec<User> {
        self.read().users.values().cloned().collect()
    }

    fn user_deletable(st: &State, name: &str) -> Result<()> {
        let u = st.users.get(name).ok_or_else(|| Self::no_user(name))?;
        let has_keys = st
            .keys
            .values()
            .any(|k| k.owner == KeyOwner::User(name.into()));
        if has_keys || !u.policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies and access keys first.".into(),
            ));
        }
        Ok(())
    }

    /// What [`Directory::delete_user`] or [`Directory::delete_role`] would refuse, without
    /// changing anything.
    pub fn check_delete(&self, holder: Holder, name: &str) -> Result<()> {
        let st = self.read();
        match holder {
            Holder::User => Self::user_deletable(&st, name),
            Holder::Role => Self::role_deletable(&st, name),
        }
    }

    pub fn delete_user(&self, name: &str) -> Result<()> {
        self.delete_entity(Holder::User, name, Self::user_deletable, |st| {
            st.users.remove(name);
        })
    }

    /// Removes a user or role that `deletable` lets go: its record, its parsed policies.
    fn delete_entity(
        &self,
        holder: Holder,
        name: &str,
        deletable: fn(&State, &str) -> Result<()>,
        remove: impl FnOnce(&mut State),
    ) -> Result<()> {
        let mut st = self.write();
        deletable(&st, name)?;
        let key = format!("{}/{name}", holder.kind());
        self.persist(&[(key.clone(), None)])?;
        remove(&mut st);
        st.parsed.remove(&key);
        Ok(())
    }

    // ---- access keys ----

    pub fn create_access_key(&self, user: &str, now: DateTime<Utc>) -> Result<AccessKey> {
        let k = self.prepare_access_key(user, now)?;
        self.insert_access_key(&k)?;
        Ok(k)
    }

    /// A new access key of `user`, checked (the user exists, is under its quota) and with its
    /// id and secret, not yet usable: [`Directory::insert_access_key`] makes it.
    pub fn prepare_access_key(&self, user: &str, now: DateTime<Utc>) -> Result<AccessKey> {
        Self::key_allowed(&self.read(), user)?;
        Ok(AccessKey {
            id: random_id("AKIA", 16),
            owner: KeyOwner::User(user.into()),
            status: KeyStatus::Active,
            created: now,
            secret: random_secret(),
        })
    }

    fn key_allowed(st: &State, user: &str) -> Result<()> {
        if !st.users.contains_key(user) {
            return Err(Self::no_user(user));
        }
        let owner = KeyOwner::User(user.into());
        if st.keys.values().filter(|k| k.owner == owner).count() >= MAX_KEYS_PER_USER {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"
            )));
        }
        Ok(())
    }

    /// Makes a prepared access key usable (checked again).
    pub fn insert_access_key(&self, k: &AccessKey) -> Result<()> {
        let mut st = self.write();
        if let KeyOwner::User(u) = &k.owner {
            Self::key_allowed(&st, u)?;
        }
        self.persist(&[self.key_record(k)?])?;
        st.keys.insert(k.id.clone(), k.clone());
        Ok(())
    }

    pub fn list_access_keys(&self, user: &str) -> Result<Vec<AccessKey>> {
        let st = self.read();
        if !st.users.contains_key(user) {
            return Err(Self::no_user(user));
        }
        let mut v: Vec<AccessKey> = st
            .keys
            .values()
            .filter(|k| k.owner == KeyOwner::User(user.into()))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    fn user_key<'a>(st: &'a mut State, user: &str, id: &str) -> Result<&'a mut AccessKey> {
        if !st.users.contains_key(user) {
            return Err(Self::no_user(user));
        }
        st.keys
            .get_mut(id)
            .filter(|k| k.owner == KeyOwner::User(user.into()))
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!("The Access Key with id {id} cannot be found."))
            })
    }

    /// What updating or deleting key `id` of `user` would refuse, without changing anything.
    pub fn check_user_key(&self, user: &str, id: &str) -> Result<()> {
        let mut st = self.write();
        Self::user_key(&mut st, user, id).map(|_| ())
    }

    pub fn update_access_key(&self, user: &str, id: &str, status: KeyStatus) -> Result<()> {
        let mut st = self.write();
        let k = Self::user_key(&mut st, user, id)?;
        let mut updated = k.clone();
        updated.status = status;
        self.persist(&[self.key_record(&updated)?])?;
        *Self::user_key(&mut st, user, id)? = updated;
        Ok(())
    }

    pub fn delete_access_key(&self, user: &str, id: &str) -> Result<()> {
        let mut st = self.write();
        Self::user_key(&mut st, user, id)?;
        self.persist(&[(format!("key/{id}"), None)])?;
        st.keys.remove(id);
        Ok(())
    }

    // ---- inline policies (users and roles) ----

    fn policy_name_ok(name: &str) -> Result<()> {
        validate_name("policyName", name).map(|_| ())
    }

    /// Changes a user's or a role's inline policies with `f`, writes the holder through and
    /// re-parses its policies for evaluation.
    fn change_policies(
        &self,
        holder: Holder,
        owner: &str,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.write();
        let key = format!("{}/{owner}", holder.kind());
        let policies = match holder {
            Holder::User => {
                let mut u = st
                    .users
                    .get(owner)
                    .cloned()
                    .ok_or_else(|| Self::no_user(owner))?;
                f(&mut u.policies)?;
                self.persist(&[Self::json(key.clone(), &u)?])?;
                let p = u.policies.clone();
                st.users.insert(owner.into(), u);
                p
            }
            Holder::Role => {
                let mut r = st
                    .roles
                    .get(owner)
                    .cloned()
                    .ok_or_else(|| Self::no_role(owner))?;
                f(&mut r.policies)?;
                self.persist(&[Self::json(key.clone(), &r)?])?;
                let p = r.policies.clone();
                st.roles.insert(owner.into(), r);
                p
            }
        };
        Self::reparse(&mut st, &key, &policies);
        Ok(())
    }

    /// What putting (`doc` given) or deleting inline policy `name` of a user or role would
    /// refuse, without changing anything.
    pub fn check_policy_change(
        &self,
        holder: Holder,
        owner: &str,
        name: &str,
        doc: Option<&str>,
    ) -> Result<()> {
        if let Some(d) = doc {
            Self::policy_name_ok(name)?;
            Policy::parse(d)?;
        }
        let policies = self.policies_held(holder, owner)?;
        if doc.is_none() && !policies.contains_key(name) {
            return Err(Self::no_policy(name, holder.kind()));
        }
        Ok(())
    }

    /// The inline policies of a user or role: name → document.
    fn policies_held(&self, holder: Holder, owner: &str) -> Result<BTreeMap<String, String>> {
        let st = self.read();
        match holder {
            Holder::User => st
                .users
                .get(owner)
                .map(|u| u.policies.clone())
                .ok_or_else(|| Self::no_user(owner)),
            Holder::Role => st
                .roles
                .get(owner)
                .map(|r| r.policies.clone())
                .ok_or_else(|| Self::no_role(owner)),
        }
    }

    /// Puts inline policy `name` of a user or role.
    pub fn put_policy(&self, holder: Holder, owner: &str, name: &str, doc: &str) -> Result<()> {
        Self::policy_name_ok(name)?;
        Policy::parse(doc)?;
        self.change_policies(holder, owner, |p| {
            p.insert(name.into(), doc.into());
            Ok(())
        })
    }

    /// Deletes inline policy `name` of a user or role.
    pub fn delete_policy(&self, holder: Holder, owner: &str, name: &str) -> Result<()> {
        self.change_policies(holder, owner, |p| match p.remove(name) {
            Some(_) => Ok(()),
            None => Err(Self::no_policy(name, holder.kind())),
        })
    }

    fn no_policy(name: &str, kind: &str) -> IamError {
        IamError::NoSuchEntity(format!(
            "The {kind} policy with name {name} cannot be found."
        ))
    }

    /// The document of inline policy `name` of a user or role.
    pub fn get_policy(&self, holder: Holder, owner: &str, name: &str) -> Result<String> {
        self.policies_held(holder, owner)?
            .remove(name)
            .ok_or_else(|| Self::no_policy(name, holder.kind()))
    }

    /// The names of a user's or role's inline policies.
    pub fn list_policies(&self, holder: Holder, owner: &str) -> Result<Vec<String>> {
        Ok(self.policies_held(holder, owner)?.into_keys().collect())
    }

    // ---- roles ----

    fn no_role(name: &str) -> IamError {
        IamError::NoSuchEntity(format!("The role with name {name} cannot be found."))
    }

    pub fn create_role(
        &self,
        name: &str,
        path: Option<&str>,
        trust_policy: &str,
        description: Option<&str>,
        max_session_duration: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Role> {
        let r = self.prepare_role(
            name,
            path,
            trust_policy,
            description,
            max_session_duration,
            now,
        )?;
        self.insert_role(&r)?;
        Ok(r)
    }

    /// A new role, checked and given its id, not yet in the directory:
    /// [`Directory::insert_role`] makes it.
    pub fn prepare_role(
        &self,
        name: &str,
        path: Option<&str>,
        trust_policy: &str,
        description: Option<&str>,
        max_session_duration: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Role> {
        validate_name("roleName", name)?;
        validate_path(path.unwrap_or("/"))?;
        Policy::parse(trust_policy)?;
        let max = max_session_duration.unwrap_or(3600);
        if !(3600..=43200).contains(&max) {
            return Err(IamError::Validation(format!("1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value between 3600 and 43200")));
        }
        Self::name_free(&self.read().roles, Holder::Role, name)?;
        Ok(Role {
            name: name.into(),
            role_id: random_id("AROA", 17),
            path: path.unwrap_or("/").into(),
            created: now,
            trust_policy: trust_policy.into(),
            description: description.map(Into::into),
            max_session_duration: max,
            policies: BTreeMap::new(),
        })
    }

    /// Makes a prepared role (checked again: the name must still be free).
    pub fn insert_role(&self, r: &Role) -> Result<()> {
        self.insert_entity(Holder::Role, &r.name, r, &r.policies, |st| &mut st.roles)
    }

    pub fn get_role(&self, name: &str) -> Result<Role> {
        self.read()
            .roles
            .get(name)
            .cloned()
            .ok_or_else(|| Self::no_role(name))
    }

    pub fn list_roles(&self) -> Vec<Role> {
        self.read().roles.values().cloned().collect()
    }

    fn role_deletable(st: &State, name: &str) -> Result<()> {
        let r = st.roles.get(name).ok_or_else(|| Self::no_role(name))?;
        if !r.policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies first.".into(),
            ));
        }
        Ok(())
    }

    pub fn delete_role(&self, name: &str) -> Result<()> {
        self.delete_entity(Holder::Role, name, Self::role_deletable, |st| {
            st.roles.remove(name);
        })
    }

    /// Issues temporary credentials for `role` (trust already checked by the caller).
    pub fn issue_session(
        &self,
        role: &str,
        session_name: &str,
        duration_seconds: i64,
        now: DateTime<Utc>,
    ) -> Result<IssuedSession> {
        let (issued, key) = self.prepare_session(role, session_name, duration_seconds, now)?;
        self.insert_session(&key, now)?;
        Ok(issued)
    }

    /// New temporary credentials for `role` (trust already checked by the caller), not yet
    /// usable: [`Directory::insert_session`] makes the returned key valid.
    pub fn prepare_session(
        &self,
        role: &str,
        session_name: &str,
        duration_seconds: i64,
        now: DateTime<Utc>,
    ) -> Result<(IssuedSession, AccessKey)> {
        let r = self.get_role(role)?;
        if !(900..=r.max_session_duration).contains(&duration_seconds) {
            return Err(IamError::Validation(if duration_seconds < 900 {
                format!("1 validation error detected: Value '{duration_seconds}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900")
            } else {
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
                    .to_string()
            }));
        }
        let token = {
            let mut b = [0u8; 48];
            rand::thread_rng().fill(&mut b[..]);
            format!(
                "FwoGZXIvYXdzE{}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        };
        let expires = now + Duration::seconds(duration_seconds);
        let k = AccessKey {
            id: random_id("ASIA", 16),
            owner: KeyOwner::Session(Session {
                role: r.name.clone(),
                role_id: r.role_id.clone(),
                session_name: session_name.into(),
                created: now,
                expires,
                token_sha256: crate::sigv4::sha256_hex(token.as_bytes()),
            }),
            status: KeyStatus::Active,
            created: now,
            secret: random_secret(),
        };
        let issued = IssuedSession {
            access_key_id: k.id.clone(),
            secret_access_key: k.secret.clone(),
            session_token: token,
            expiration: expires,
            role: r,
            session_name: session_name.into(),
        };
        Ok((issued, k))
    }

    /// Makes prepared session credentials valid (their role must still be the same one).
    pub fn insert_session(&self, k: &AccessKey, now: DateTime<Utc>) -> Result<()> {
        let mut st = self.write();
        if let KeyOwner::Session(s) = &k.owner {
            if st.roles.get(&s.role).map(|r| &r.role_id) != Some(&s.role_id) {
                return Err(Self::no_role(&s.role));
            }
        }
        // Drop expired sessions while here, so they do not accumulate.
        let expired: Vec<String> = st
            .keys
            .values()
            .filter(|k| matches!(&k.owner, KeyOwner::Session(s) if s.expires <= now))
            .map(|k| k.id.clone())
            .collect();
        let mut changes: Vec<(String, Option<Vec<u8>>)> = expired
            .iter()
            .map(|id| (format!("key/{id}"), None))
            .collect();
        changes.push(self.key_record(k)?);
        self.persist(&changes)?;
        for id in expired {
            st.keys.remove(&id);
        }
        st.keys.insert(k.id.clone(), k.clone());
        Ok(())
    }

    /// The inline policies that apply to a key's owner (empty for root, which needs none).
    pub fn policies_of(&self, owner: &KeyOwner) -> Arc<Vec<Policy>> {
        let key = match owner {
            KeyOwner::Root => return Arc::new(Vec::new()),
            KeyOwner::User(u) => format!("user/{u}"),
            KeyOwner::Session(s) => format!("role/{}", s.role),
        };
        self.read()
            .parsed
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Arc::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A test sealer: XOR with a context-derived pad, enough to show the secret is not stored
    /// in clear and that the context binds.
    struct XorSealer;
    impl Sealer for XorSealer {
        fn seal(&self, p: &[u8], ctx: &[u8]) -> std::result::Result<Vec<u8>, String> {
            let pad = Sha256::digest(ctx);
            let mut v: Vec<u8> = p.iter().enumerate().map(|(i, b)| b ^ pad[i % 32]).collect();
            v.extend_from_slice(&pad[..4]);
            Ok(v)
        }
        fn open(&self, s: &[u8], ctx: &[u8]) -> std::result::Result<Vec<u8>, String> {
            let pad = Sha256::digest(ctx);
            let (body, tag) = s.split_at(s.len() - 4);
            if tag != &pad[..4] {
                return Err("wrong context".into());
            }
            Ok(body
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ pad[i % 32])
                .collect())
        }
    }

    fn open(dir: &Path) -> Directory {
        Directory::open(&dir.join("iam.redb"), "123456789012", Arc::new(XorSealer)).unwrap()
    }

    #[test]
    fn users_keys_and_policies_survive_reopen_and_secrets_are_not_stored_in_clear() {
        let d = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let (id, secret) = {
            let dir = open(d.path());
            dir.create_user("alice", None, now).unwrap();
            dir.put_policy(
                Holder::User,
                "alice",
                "ro",
                r#"{"Statement":{"Effect":"Allow","Action":"cloudtrail:Get*","Resource":"*"}}"#,
            )
            .unwrap();
            let k = dir.create_access_key("alice", now).unwrap();
            (k.id, k.secret)
        };
        let raw = std::fs::read(d.path().join("iam.redb")).unwrap();
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret access key found in clear on disk"
        );
        let dir = open(d.path());
        let k = dir.access_key(&id, now).unwrap();
        assert_eq!(k.secret, secret);
        assert_eq!(k.owner, KeyOwner::User("alice".into()));
        assert_eq!(dir.policies_of(&k.owner).len(), 1);
        assert_eq!(
            dir.list_policies(Holder::User, "alice").unwrap(),
            vec!["ro"]
        );
    }

    #[test]
    fn errors_carry_iam_codes() {
        let d = tempfile::tempdir().unwrap();
        let dir = open(d.path());
        let now = Utc::now();
        assert_eq!(
            dir.get_user("nobody").unwrap_err().code(),
            ("NoSuchEntity", 404)
        );
        dir.create_user("bob", None, now).unwrap();
        assert_eq!(
            dir.create_user("bob", None, now).unwrap_err().code().0,
            "EntityAlreadyExists"
        );
        dir.create_access_key("bob", now).unwrap();
        dir.create_access_key("bob", now).unwrap();
        assert_eq!(
            dir.create_access_key("bob", now).unwrap_err().code().0,
            "LimitExceeded"
        );
        assert_eq!(
            dir.delete_user("bob").unwrap_err().code().0,
            "DeleteConflict"
        );
        assert_eq!(
            dir.put_policy(Holder::User, "bob", "p", "{not json")
                .unwrap_err()
                .code()
                .0,
            "MalformedPolicyDocument"
        );
        assert_eq!(
            dir.create_user("bad/name", None, now).unwrap_err().code().0,
            "ValidationError"
        );
    }

    #[test]
    fn sessions_expire_and_bind_their_token() {
        let d = tempfile::tempdir().unwrap();
        let dir = open(d.path());
        let now = Utc::now();
        dir.create_role(
            "auditor",
            None,
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}}"#,
            None,
            None,
            now,
        )
        .unwrap();
        let s = dir.issue_session("auditor", "s1", 900, now).unwrap();
        let k = dir.access_key(&s.access_key_id, now).unwrap();
        assert!(Directory::session_token_matches(&k, &s.session_token));
        assert!(!Directory::session_token_matches(&k, "forged"));
        assert!(dir
            .access_key(&s.access_key_id, now + Duration::seconds(901))
            .is_none());
        assert_eq!(
            dir.issue_session("auditor", "s2", 7200, now)
                .unwrap_err()
                .code()
                .0,
            "ValidationError"
        );
    }
}
