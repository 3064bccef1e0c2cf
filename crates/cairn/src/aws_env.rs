//! Where a server is and who the caller is, found as the `aws` CLI finds them, so a script
//! that runs `aws cloudtrail …` runs `cairn …` unchanged.
//!
//! - endpoint: `--endpoint-url`, else `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`,
//!   else the profile's `endpoint_url` (all but the flag ignored when
//!   `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`), else AWS itself;
//! - credentials: `--profile` names a profile whose keys are used; otherwise
//!   `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else the profile named by
//!   `AWS_PROFILE` (or `default`) in `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`) and
//!   `AWS_CONFIG_FILE` (`~/.aws/config`);
//! - region: `--region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else the profile's;
//! - trusted CAs for https: `--ca-bundle`, else `AWS_CA_BUNDLE`, else the profile's
//!   `ca_bundle`, else the system's roots.
//!
//! The files are INI as the CLI writes them; nested sub-sections (indented lines) are skipped.
//! No crate reads exactly this layout (`[profile x]` in one file, `[x]` in the other), and
//! it is a few lines.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;

/// The `aws` CLI's global options that decide where a call goes and how it is signed.
#[derive(Args, Debug, Clone, Default)]
pub struct AwsGlobals {
    /// The server (as the `aws` CLI; else AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL).
    #[arg(long = "endpoint-url", alias = "endpoint")]
    pub endpoint_url: Option<String>,
    /// A profile of ~/.aws/credentials and ~/.aws/config (else AWS_PROFILE).
    #[arg(long)]
    pub profile: Option<String>,
    /// The region calls are signed for (else AWS_REGION, AWS_DEFAULT_REGION, the profile's).
    #[arg(long)]
    pub region: Option<String>,
    /// Certificates to trust for https endpoints (else AWS_CA_BUNDLE).
    #[arg(long)]
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub key: String,
    pub secret: String,
    pub token: Option<String>,
}

/// The resolved environment of one command.
#[derive(Debug, Clone)]
pub struct AwsEnv {
    flags: AwsGlobals,
    /// The profile's settings, credentials file over config file.
    profile: HashMap<String, String>,
    profile_name: String,
    explicit_profile: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
}

/// The `key = value` lines of section `name` of an INI file (missing file: none).
fn section(path: &PathBuf, name: &str) -> Result<HashMap<String, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(h) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            inside = h.split_whitespace().collect::<Vec<_>>().join(" ") == name;
            continue;
        }
        // An indented line belongs to a nested sub-section (`s3 =` then `  addressing_style`).
        if !inside || line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        if let Some((k, v)) = t.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(out)
}

impl AwsEnv {
    pub fn load(flags: &AwsGlobals) -> Result<AwsEnv> {
        let explicit_profile = flags.profile.is_some();
        let profile_name = flags
            .profile
            .clone()
            .or_else(|| var("AWS_PROFILE"))
            .or_else(|| var("AWS_DEFAULT_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let config_file = var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".aws/config"));
        let creds_file = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".aws/credentials"));
        let config_section = if profile_name == "default" {
            "default".to_string()
        } else {
            format!("profile {profile_name}")
        };
        let mut profile = section(&config_file, &config_section)?;
        profile.extend(section(&creds_file, &profile_name)?);
        if explicit_profile && profile.is_empty() {
            bail!("The config profile ({profile_name}) could not be found");
        }
        Ok(AwsEnv {
            flags: flags.clone(),
            profile,
            profile_name,
            explicit_profile,
        })
    }

    /// The endpoint configured for `service` (its SDK id, e.g. `CloudTrail`, `S3`), if any:
    /// `None` means AWS itself.
    pub fn configured_endpoint(&self, service: &str) -> Option<String> {
        if let Some(e) = &self.flags.endpoint_url {
            return Some(e.clone());
        }
        self.configured_endpoint_without_flag(service)
    }

    /// As [`configured_endpoint`](Self::configured_endpoint), ignoring `--endpoint-url`: the
    /// CLI applies that flag to the command's own service only, not to the S3 reads
    /// `validate-logs` makes.
    pub fn configured_endpoint_without_flag(&self, service: &str) -> Option<String> {
        if var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || self
                .profile
                .get("ignore_configured_endpoint_urls")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return None;
        }
        let id = service.to_ascii_uppercase().replace([' ', '-'], "_");
        var(&format!("AWS_ENDPOINT_URL_{id}"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| self.profile.get("endpoint_url").cloned())
    }

    /// The endpoint for `service` (`host_prefix` is its AWS host name, e.g. `cloudtrail`).
    pub fn endpoint(&self, service: &str, host_prefix: &str, region: &str) -> String {
        self.configured_endpoint(service)
            .unwrap_or_else(|| format!("https://{host_prefix}.{region}.amazonaws.com"))
    }

    pub fn region(&self) -> Option<String> {
        self.flags
            .region
            .clone()
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| self.profile.get("region").cloned())
    }

    pub fn credentials(&self) -> Result<Credentials> {
        let from_env = || -> Option<Credentials> {
            Some(Credentials {
                key: var("AWS_ACCESS_KEY_ID")?,
                secret: var("AWS_SECRET_ACCESS_KEY")?,
                token: var("AWS_SESSION_TOKEN"),
            })
        };
        let from_profile = || -> Option<Credentials> {
            Some(Credentials {
                key: self.profile.get("aws_access_key_id")?.clone(),
                secret: self.profile.get("aws_secret_access_key")?.clone(),
                token: self.profile.get("aws_session_token").cloned(),
            })
        };
        let found = if self.explicit_profile {
            from_profile()
        } else {
            from_env().or_else(from_profile)
        };
        found.with_context(|| {
            format!(
                "Unable to locate credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 or give profile {:?} aws_access_key_id and aws_secret_access_key",
                self.profile_name
            )
        })
    }

    /// Certificates to trust for https, if not the system's.
    pub fn ca_bundle(&self) -> Option<PathBuf> {
        self.flags
            .ca_bundle
            .clone()
            .or_else(|| var("AWS_CA_BUNDLE").map(PathBuf::from))
            .or_else(|| self.profile.get("ca_bundle").map(PathBuf::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_follow_the_cli_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(
            &p,
            "[default]\nregion = eu-west-1\n\n[profile  dev]\nregion=us-west-2\n\
             s3 =\n  endpoint_url = http://nested\nendpoint_url = http://dev:1\n# c\n[other]\nregion = x\n",
        )
        .unwrap();
        let d = section(&p, "default").unwrap();
        assert_eq!(d.get("region").map(String::as_str), Some("eu-west-1"));
        let dev = section(&p, "profile dev").unwrap();
        assert_eq!(dev.get("region").map(String::as_str), Some("us-west-2"));
        assert_eq!(
            dev.get("endpoint_url").map(String::as_str),
            Some("http://dev:1")
        );
        assert!(section(&dir.path().join("missing"), "default")
            .unwrap()
            .is_empty());
    }
}
