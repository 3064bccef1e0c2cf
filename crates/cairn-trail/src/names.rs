//! Object keys of log files and digests (spec §1.1 and §3.1).

use cairn_record::time::{DIGEST_NAME_SECONDS, LOG_NAME_MINUTES};
use chrono::{DateTime, Utc};

/// Ordered base-62 alphabet: ASCII order equals numeric order, so fixed-width encodings sort
/// like the numbers they encode.
const B62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = B62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The 16-character unique part of a log file name: delivery epoch (10 chars) then the file's
/// index within the epoch (6 chars). AWS calls this part meaningless; ours sorts in delivery
/// order so marker-based readers never skip a file.
pub fn unique_part(epoch: u64, index: u32) -> String {
    format!("{}{}", base62(epoch, 10), base62(index as u64, 6))
}

fn with_prefix(prefix: Option<&str>, rest: String) -> String {
    match prefix {
        Some(p) if !p.is_empty() => format!("{}/{rest}", p.trim_end_matches('/')),
        _ => rest,
    }
}

/// `[prefix/]AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz`
pub fn log_file_key(
    prefix: Option<&str>,
    account: &str,
    region: &str,
    delivered: DateTime<Utc>,
    unique: &str,
) -> String {
    with_prefix(
        prefix,
        format!(
            "AWSLogs/{account}/CloudTrail/{region}/{}/{account}_CloudTrail_{region}_{}_{unique}.json.gz",
            delivered.format("%Y/%m/%d"),
            delivered.format(LOG_NAME_MINUTES)
        ),
    )
}

/// `[prefix/]AWSLogs/<acct>/CloudTrail-Digest/<region>/YYYY/MM/DD/<acct>_CloudTrail-Digest_<region>_<trail>_<home>_<YYYYMMDDTHHMMSSZ>.json.gz`
pub fn digest_key(
    prefix: Option<&str>,
    account: &str,
    region: &str,
    trail: &str,
    home_region: &str,
    end: DateTime<Utc>,
) -> String {
    with_prefix(
        prefix,
        format!(
            "AWSLogs/{account}/CloudTrail-Digest/{region}/{}/{account}_CloudTrail-Digest_{region}_{trail}_{home_region}_{}.json.gz",
            end.format("%Y/%m/%d"),
            end.format(DIGEST_NAME_SECONDS)
        ),
    )
}

/// The folder holding a region's log files: `[prefix/]AWSLogs/<acct>/CloudTrail/<region>/`.
pub fn log_folder(prefix: Option<&str>, account: &str, region: &str) -> String {
    with_prefix(prefix, format!("AWSLogs/{account}/CloudTrail/{region}/"))
}

/// The prefix the AWS CLI lists digests with: `[prefix/]AWSLogs/<acct>/CloudTrail-Digest/<region>`.
pub fn digest_list_prefix(prefix: Option<&str>, account: &str, region: &str) -> String {
    with_prefix(
        prefix,
        format!("AWSLogs/{account}/CloudTrail-Digest/{region}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn log_key_matches_the_spec_example_shape() {
        let t = Utc.with_ymd_and_hms(2015, 8, 1, 2, 10, 33).unwrap();
        let k = log_file_key(None, "111122223333", "us-east-2", t, "Mu0KsOhtH1ar15ZZ");
        assert_eq!(k, "AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/01/111122223333_CloudTrail_us-east-2_20150801T0210Z_Mu0KsOhtH1ar15ZZ.json.gz");
        let p = log_file_key(Some("my/prefix/"), "1", "r", t, "u");
        assert!(p.starts_with("my/prefix/AWSLogs/"), "{p}");
    }

    #[test]
    fn digest_key_matches_the_spec_example_and_the_cli_slice() {
        let t = Utc.with_ymd_and_hms(2015, 8, 17, 15, 1, 31).unwrap();
        let k = digest_key(
            None,
            "111122223333",
            "us-east-2",
            "your-trail-name",
            "us-east-2",
            t,
        );
        assert_eq!(k, "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz");
        // The CLI reads the timestamp as key[-24:-8].
        assert_eq!(&k[k.len() - 24..k.len() - 8], "20150817T150131Z");
    }

    #[test]
    fn unique_parts_are_16_alphanumerics_sorting_in_delivery_order() {
        let a = unique_part(9, 61);
        let b = unique_part(10, 0);
        let c = unique_part(10, 1);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|x| x.is_ascii_alphanumeric()));
        assert!(a < b && b < c);
        assert!(unique_part(61, 0) < unique_part(62, 0));
    }
}
