//! Amazon Resource Names: `arn:partition:service:region:account-id:resource`.

use std::fmt;
use std::str::FromStr;

/// The partition cairn serves: every ARN it accepts names it.
pub const PARTITION: &str = "aws";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    /// Everything after the fifth colon (may itself contain colons and slashes).
    pub resource: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid ARN {0:?}")]
pub struct ArnError(pub String);

impl Arn {
    pub fn new(service: &str, region: &str, account: &str, resource: &str) -> Arn {
        Arn {
            partition: PARTITION.into(),
            service: service.into(),
            region: region.into(),
            account: account.into(),
            resource: resource.into(),
        }
    }

    /// `arn:aws:cloudtrail:<region>:<account>:trail/<name>`.
    pub fn trail(region: &str, account: &str, name: &str) -> Arn {
        Arn::new("cloudtrail", region, account, &format!("trail/{name}"))
    }

    /// `arn:aws:s3:::<bucket>` (S3 ARNs carry no region or account).
    pub fn s3_bucket(bucket: &str) -> Arn {
        Arn::new("s3", "", "", bucket)
    }

    /// `arn:aws:s3:::<bucket>/<key>`.
    pub fn s3_object(bucket: &str, key: &str) -> Arn {
        Arn::new("s3", "", "", &format!("{bucket}/{key}"))
    }

    /// `arn:aws:iam::<account>:<resource>` (IAM is global: no region).
    pub fn iam(account: &str, resource: &str) -> Arn {
        Arn::new("iam", "", account, resource)
    }

    /// `arn:aws:sts::<account>:<resource>` (an assumed role's session).
    pub fn sts(account: &str, resource: &str) -> Arn {
        Arn::new("sts", "", account, resource)
    }

    /// `arn:aws:dynamodb:<region>:<account>:table/<name>`.
    pub fn dynamodb_table(region: &str, account: &str, table: &str) -> Arn {
        Arn::new("dynamodb", region, account, &format!("table/{table}"))
    }

    /// The resource's type prefix, e.g. `trail` for `trail/name`.
    pub fn resource_type(&self) -> &str {
        self.resource
            .split(['/', ':'])
            .next()
            .unwrap_or(&self.resource)
    }

    /// The text after the last `/` of the resource (a trail's or a table's name).
    pub fn resource_name(&self) -> &str {
        self.resource.rsplit('/').next().unwrap_or(&self.resource)
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

impl FromStr for Arn {
    type Err = ArnError;
    fn from_str(s: &str) -> Result<Arn, ArnError> {
        let mut parts = s.splitn(6, ':');
        let err = || ArnError(s.to_string());
        if parts.next() != Some("arn") {
            return Err(err());
        }
        let partition = parts.next().ok_or_else(err)?;
        let service = parts.next().ok_or_else(err)?;
        let region = parts.next().ok_or_else(err)?;
        let account = parts.next().ok_or_else(err)?;
        let resource = parts.next().ok_or_else(err)?;
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return Err(err());
        }
        Ok(Arn {
            partition: partition.into(),
            service: service.into(),
            region: region.into(),
            account: account.into(),
            resource: resource.into(),
        })
    }
}

/// True when `account` is exactly 12 ASCII digits (what the AWS CLI insists on).
pub fn is_account_id(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_trail_arn() {
        let s = "arn:aws:cloudtrail:us-east-2:123456789012:trail/My-First-Trail";
        let a: Arn = s.parse().unwrap();
        assert_eq!(a.service, "cloudtrail");
        assert_eq!(a.region, "us-east-2");
        assert_eq!(a.account, "123456789012");
        assert_eq!(a.resource_type(), "trail");
        assert_eq!(a.resource_name(), "My-First-Trail");
        assert_eq!(a.to_string(), s);
        assert_eq!(Arn::trail("us-east-2", "123456789012", "My-First-Trail"), a);
    }

    #[test]
    fn s3_arns_have_empty_region_and_account() {
        assert_eq!(
            Arn::s3_object("b", "a/b.txt").to_string(),
            "arn:aws:s3:::b/a/b.txt"
        );
        let a: Arn = "arn:aws:s3:::bucket/key:with:colons".parse().unwrap();
        assert_eq!(a.resource, "bucket/key:with:colons");
    }

    #[test]
    fn rejects_non_arns() {
        assert!("arn:aws:s3".parse::<Arn>().is_err());
        assert!("urn:aws:s3:::b".parse::<Arn>().is_err());
        assert!(is_account_id("123456789012"));
        assert!(!is_account_id("12345678901a"));
    }
}
