//! Any S3-compatible service, through the `object_store` crate.
//!
//! `object_store` paths cannot hold every S3 key (empty segments, `.` and `..` segments are
//! refused), so such keys are rejected with [`StoreError::InvalidKey`] rather than altered.

use crate::{check_key, ListPage, Object, ObjectInfo, ObjectStore, PutOptions, Result, StoreError};
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore as _, PutMode, PutPayload,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Where and how to reach the service.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// e.g. `http://127.0.0.1:9000`
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Virtual-host addressing instead of path style.
    pub virtual_hosted: bool,
    /// Temporary credentials' session token.
    pub session_token: Option<String>,
    /// PEM certificates to trust for an https endpoint, besides the system's.
    pub ca_bundle: Option<std::path::PathBuf>,
}

pub struct RemoteStore {
    cfg: RemoteConfig,
    rt: tokio::runtime::Runtime,
    clients: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

fn remote(e: object_store::Error) -> StoreError {
    StoreError::Remote(e.to_string())
}

impl RemoteStore {
    pub fn new(cfg: RemoteConfig) -> Result<RemoteStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(RemoteStore {
            cfg,
            rt,
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn client(&self, bucket: &str) -> Result<Arc<AmazonS3>> {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(bucket) {
            return Ok(c.clone());
        }
        let mut options = object_store::ClientOptions::new().with_allow_http(true);
        if let Some(p) = &self.cfg.ca_bundle {
            let pem = std::fs::read(p)?;
            for c in object_store::Certificate::from_pem_bundle(&pem).map_err(remote)? {
                options = options.with_root_certificate(c);
            }
        }
        let mut b = AmazonS3Builder::new();
        if let Some(t) = &self.cfg.session_token {
            b = b.with_token(t);
        }
        let c = b
            .with_client_options(options)
            .with_endpoint(&self.cfg.endpoint)
            .with_region(&self.cfg.region)
            .with_bucket_name(bucket)
            .with_access_key_id(&self.cfg.access_key_id)
            .with_secret_access_key(&self.cfg.secret_access_key)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(self.cfg.virtual_hosted)
            .build()
            .map_err(remote)?;
        let c = Arc::new(c);
        m.insert(bucket.to_string(), c.clone());
        Ok(c)
    }

    fn path(key: &str) -> Result<Path> {
        check_key(key)?;
        let p = Path::parse(key).map_err(|e| StoreError::InvalidKey(format!("{key:?}: {e}")))?;
        if p.as_ref() != key {
            return Err(StoreError::InvalidKey(format!(
                "{key:?} is not representable upstream"
            )));
        }
        Ok(p)
    }

    fn not_found<'a>(
        bucket: &'a str,
        key: &'a str,
    ) -> impl Fn(object_store::Error) -> StoreError + 'a {
        move |e| match e {
            object_store::Error::NotFound { .. } => StoreError::NoSuchKey {
                bucket: bucket.into(),
                key: key.into(),
            },
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => StoreError::PreconditionFailed,
            e => remote(e),
        }
    }

    fn info(key: &str, meta: &object_store::ObjectMeta, attrs: &Attributes) -> ObjectInfo {
        let mut metadata = BTreeMap::new();
        let mut content_type = None;
        let mut content_encoding = None;
        for (k, v) in attrs {
            match k {
                Attribute::ContentType => content_type = Some(v.to_string()),
                Attribute::ContentEncoding => content_encoding = Some(v.to_string()),
                Attribute::Metadata(name) => {
                    metadata.insert(name.to_string(), v.to_string());
                }
                _ => {}
            }
        }
        ObjectInfo {
            key: key.into(),
            size: meta.size,
            etag: meta.e_tag.clone().unwrap_or_default(),
            last_modified: meta.last_modified,
            content_type,
            content_encoding,
            metadata,
            version_id: None,
            system: Default::default(),
        }
    }
}

impl ObjectStore for RemoteStore {
    fn create_bucket(&self, bucket: &str) -> Result<()> {
        if self.bucket_exists(bucket)? {
            Ok(())
        } else {
            Err(StoreError::Unsupported(format!(
                "create bucket {bucket} on the upstream service first"
            )))
        }
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool> {
        let c = self.client(bucket)?;
        self.rt.block_on(async {
            let mut s = c.list(None);
            match s.next().await {
                None | Some(Ok(_)) => Ok(true),
                Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
                Some(Err(e)) if e.to_string().contains("NoSuchBucket") => Ok(false),
                Some(Err(e)) => Err(remote(e)),
            }
        })
    }

    fn put(&self, bucket: &str, key: &str, body: &[u8], opts: &PutOptions) -> Result<ObjectInfo> {
        // Never write in plaintext what was asked to be sealed under a KMS key.
        if opts.wrapped_key.is_some() {
            return Err(StoreError::KeyUnavailable(
                "SSE-KMS bodies are sealed by the embedded store; a remote store cannot keep them"
                    .into(),
            ));
        }
        let path = Self::path(key)?;
        let c = self.client(bucket)?;
        let mut attrs = Attributes::new();
        if let Some(ct) = &opts.content_type {
            attrs.insert(Attribute::ContentType, AttributeValue::from(ct.clone()));
        }
        if let Some(ce) = &opts.content_encoding {
            attrs.insert(Attribute::ContentEncoding, AttributeValue::from(ce.clone()));
        }
        for (k, v) in &opts.metadata {
            attrs.insert(
                Attribute::Metadata(k.clone().into()),
                AttributeValue::from(v.clone()),
            );
        }
        let put = object_store::PutOptions {
            mode: if opts.if_none_match {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            attributes: attrs,
            ..Default::default()
        };
        let payload = PutPayload::from(body.to_vec());
        let r = self
            .rt
            .block_on(c.put_opts(&path, payload, put))
            .map_err(Self::not_found(bucket, key))?;
        Ok(ObjectInfo {
            key: key.into(),
            size: body.len() as u64,
            etag: r.e_tag.unwrap_or_default(),
            last_modified: chrono::Utc::now(),
            content_type: opts.content_type.clone(),
            content_encoding: opts.content_encoding.clone(),
            metadata: opts.metadata.clone(),
            version_id: None,
            system: Default::default(),
        })
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Object> {
        let path = Self::path(key)?;
        let c = self.client(bucket)?;
        self.rt.block_on(async {
            let r = c
                .get_opts(&path, GetOptions::default())
                .await
                .map_err(Self::not_found(bucket, key))?;
            let info = Self::info(key, &r.meta, &r.attributes);
            let body = r.bytes().await.map_err(remote)?.to_vec();
            Ok(Object { info, body })
        })
    }

    fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let path = Self::path(key)?;
        let c = self.client(bucket)?;
        self.rt.block_on(async {
            let opts = GetOptions {
                head: true,
                ..Default::default()
            };
            let r = c
                .get_opts(&path, opts)
                .await
                .map_err(Self::not_found(bucket, key))?;
            Ok(Self::info(key, &r.meta, &r.attributes))
        })
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let path = Self::path(key)?;
        let c = self.client(bucket)?;
        match self.rt.block_on(c.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(e)),
        }
    }

    fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, n: usize) -> Result<ListPage> {
        let c = self.client(bucket)?;
        // object_store prefixes are whole path segments; list the enclosing "directory" and
        // filter by the exact string prefix here.
        let dir = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let dir_path = if dir.is_empty() {
            None
        } else {
            Some(Path::parse(dir).map_err(|e| StoreError::InvalidKey(e.to_string()))?)
        };
        self.rt.block_on(async {
            let offset = match after {
                Some(m) if m >= prefix => {
                    Some(Path::parse(m).map_err(|e| StoreError::InvalidKey(e.to_string()))?)
                }
                _ => None,
            };
            let mut stream = match &offset {
                Some(o) => c.list_with_offset(dir_path.as_ref(), o),
                None => c.list(dir_path.as_ref()),
            };
            let mut page = ListPage::default();
            while let Some(item) = stream.next().await {
                let meta = item.map_err(remote)?;
                let key = meta.location.as_ref().to_string();
                if !key.starts_with(prefix) {
                    if key.as_str() > prefix
                        && !prefix.is_empty()
                        && key.as_str() > &format!("{prefix}\u{10FFFF}")[..]
                    {
                        break;
                    }
                    continue;
                }
                if page.objects.len() == n {
                    page.is_truncated = true;
                    break;
                }
                page.objects
                    .push(Self::info(&key, &meta, &Attributes::new()));
            }
            Ok(page)
        })
    }
}
