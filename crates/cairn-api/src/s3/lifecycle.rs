//! The lifecycle worker: applies each bucket's lifecycle rules — transitions to archive
//! storage classes, expiration, noncurrent-version expiration, expired delete markers — and
//! finishes and ends restores. It reads time from the API's clock, so tests drive it with a
//! manual clock and [`run_once`].
//!
//! Timing follows S3: an action is due at the first midnight UTC at or after the object's
//! age reaches the rule's days. Objects under the bucket's minimum transition size
//! (`x-amz-transition-default-minimum-object-size`, 128 KiB by default) stay where they are.
//! Object lock wins over expiration of a version (the version stays; a delete marker is still
//! placed on the current version, as S3 does). Lifecycle actions are not CloudTrail events
//! (S3 does not log them to CloudTrail either).

use crate::Api;
use cairn_store::{ObjectInfo, VersionEntry};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// One lifecycle rule, as far as cairn acts on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    pub transitions: Vec<(i64, String)>,
    pub expiration_days: Option<i64>,
    pub expired_delete_marker: bool,
    pub noncurrent_expiration_days: Option<i64>,
    pub noncurrent_transitions: Vec<(i64, String)>,
    /// AbortIncompleteMultipartUpload's DaysAfterInitiation.
    pub abort_incomplete_days: Option<i64>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pass {
    pub transitioned: u64,
    pub expired: u64,
    pub noncurrent_expired: u64,
    pub markers_removed: u64,
    pub restores_finished: u64,
    pub restores_ended: u64,
    pub kept_by_lock: u64,
    pub uploads_aborted: u64,
}

/// The enabled rules of a lifecycle configuration document.
pub fn parse_rules(doc: &crate::protocol::xml::Element) -> Vec<Rule> {
    let days = |e: Option<&crate::protocol::xml::Element>, name: &str| {
        e.and_then(|e| e.child_text(name))
            .and_then(|d| d.trim().parse::<i64>().ok())
    };
    let mut out = Vec::new();
    for r in doc.children_named("Rule") {
        if r.child_text("Status").map(str::trim) != Some("Enabled") {
            continue;
        }
        let mut rule = Rule::default();
        let filter = r.child("Filter");
        let and = filter.and_then(|f| f.child("And"));
        rule.prefix = r
            .child_text("Prefix")
            .or_else(|| filter.and_then(|f| f.child_text("Prefix")))
            .or_else(|| and.and_then(|a| a.child_text("Prefix")))
            .unwrap_or_default()
            .to_string();
        let tag_of = |t: &crate::protocol::xml::Element| {
            (
                t.child_text("Key").unwrap_or_default().to_string(),
                t.child_text("Value").unwrap_or_default().to_string(),
            )
        };
        rule.tags = filter
            .into_iter()
            .flat_map(|f| f.children_named("Tag"))
            .chain(and.into_iter().flat_map(|a| a.children_named("Tag")))
            .map(tag_of)
            .collect();
        for t in r.children_named("Transition") {
            if let (Some(d), Some(c)) = (days(Some(t), "Days"), t.child_text("StorageClass")) {
                rule.transitions.push((d, c.trim().to_string()));
            }
        }
        for t in r.children_named("NoncurrentVersionTransition") {
            if let (Some(d), Some(c)) = (
                days(Some(t), "NoncurrentDays"),
                t.child_text("StorageClass"),
            ) {
                rule.noncurrent_transitions.push((d, c.trim().to_string()));
            }
        }
        let exp = r.child("Expiration");
        rule.expiration_days = days(exp, "Days");
        rule.expired_delete_marker = exp
            .and_then(|e| e.child_text("ExpiredObjectDeleteMarker"))
            .is_some_and(|v| v.trim() == "true");
        rule.noncurrent_expiration_days =
            days(r.child("NoncurrentVersionExpiration"), "NoncurrentDays");
        rule.abort_incomplete_days = days(
            r.child("AbortIncompleteMultipartUpload"),
            "DaysAfterInitiation",
        );
        out.push(rule);
    }
    out
}

/// When an action `days` after `since` becomes due: the next midnight UTC at or after it.
/// A span no calendar holds is never due.
pub fn due(since: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    let later = |t: DateTime<Utc>, days: i64| {
        Duration::try_days(days).and_then(|d| t.checked_add_signed(d))
    };
    let Some(t) = later(since, days) else {
        return DateTime::<Utc>::MAX_UTC;
    };
    let midnight = t
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|n| n.and_utc())
        .unwrap_or(t);
    if midnight == t {
        t
    } else {
        later(midnight, 1).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// How long a restored copy stays: `days` from now, rounded to the next midnight UTC.
pub fn restore_expiry(now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    due(now, days)
}

/// How long a restore takes, by retrieval tier (the lower bound of S3's ranges for GLACIER).
fn restore_delay(tier: &str, class: &str) -> Duration {
    match (tier, class) {
        ("Expedited", _) => Duration::minutes(1),
        ("Bulk", "DEEP_ARCHIVE") => Duration::hours(48),
        ("Bulk", _) => Duration::hours(5),
        (_, "DEEP_ARCHIVE") => Duration::hours(12),
        _ => Duration::hours(3),
    }
}

fn rank(class: &str) -> u8 {
    match class {
        "STANDARD" | "" => 0,
        "STANDARD_IA" | "ONEZONE_IA" | "INTELLIGENT_TIERING" => 1,
        "GLACIER_IR" => 2,
        "GLACIER" => 3,
        "DEEP_ARCHIVE" => 4,
        _ => 0,
    }
}

fn matches(rule: &Rule, info: &ObjectInfo) -> bool {
    if !info.key.starts_with(&rule.prefix) {
        return false;
    }
    if rule.tags.is_empty() {
        return true;
    }
    let tags: Vec<(String, String)> = info
        .system
        .get("tagging")
        .map(|t| {
            form_urlencoded::parse(t.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    rule.tags.iter().all(|t| tags.contains(t))
}

fn lock_holds(info: &ObjectInfo, now: DateTime<Utc>) -> bool {
    info.system.get("legal-hold").map(String::as_str) == Some("ON")
        || info
            .system
            .get("retain-until")
            .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
            .is_some_and(|u| u.with_timezone(&Utc) > now)
}

/// The storage class a transition list moves an object of `age_since` to at `now`, if it is
/// colder than where the object is.
fn transition_target(
    list: &[(i64, String)],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    current: &str,
) -> Option<String> {
    list.iter()
        .filter(|(d, _)| due(since, *d) <= now)
        .map(|(_, c)| c.clone())
        .filter(|c| rank(c) > rank(current))
        .max_by_key(|c| rank(c))
}

/// Runs every bucket's lifecycle once at the API clock's time.
pub fn run_once(api: &Api) -> Result<Pass, String> {
    let now = api.clock.now();
    let mut pass = Pass::default();
    let configs: Vec<(String, String)> = api
        .meta
        .scan::<String>("bucket-config/lifecycle/")
        .map_err(|e| e.message)?;
    let store = api.store.clone();
    let mut buckets: Vec<(String, Vec<Rule>)> = Vec::new();
    for (k, text) in configs {
        let bucket = k.trim_start_matches("bucket-config/lifecycle/").to_string();
        let rules = crate::protocol::xml::parse(text.as_bytes())
            .map(|d| parse_rules(&d))
            .unwrap_or_default();
        buckets.push((bucket, rules));
    }
    // Incomplete multipart uploads: the bucket's rule, else the default expiry.
    let abort_rules: std::collections::BTreeMap<String, Vec<(String, i64)>> = buckets
        .iter()
        .map(|(b, rules)| {
            let r = rules
                .iter()
                .filter_map(|r| r.abort_incomplete_days.map(|d| (r.prefix.clone(), d)))
                .collect();
            (b.clone(), r)
        })
        .collect();
    pass.uploads_aborted =
        crate::s3::uploads::expire_uploads(api, now, &abort_rules).map_err(|e| e.message)?;
    // Restores are finished and ended in every bucket, with or without lifecycle rules.
    let all = store.list_buckets().map_err(|e| e.to_string())?;
    for (bucket, _) in all {
        let rules = buckets
            .iter()
            .find(|(b, _)| *b == bucket)
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        let min_size: u64 = match api
            .meta
            .get::<String>(&format!("bucket-config/lifecycle-min-size/{bucket}"))
            .ok()
            .flatten()
            .as_deref()
        {
            Some("varies_by_storage_class") => 0,
            _ => 128 * 1024,
        };
        let mut after: Option<(String, Option<String>)> = None;
        let mut prev_key: Option<String> = None;
        let mut newer_modified: Option<DateTime<Utc>> = None;
        let mut versions_of_key = 0usize;
        loop {
            let (page, truncated) = match store.list_versions(
                &bucket,
                "",
                after.as_ref().map(|(k, v)| (k.as_str(), v.as_deref())),
                1000,
            ) {
                Ok(p) => p,
                Err(cairn_store::StoreError::Unsupported(_)) => break,
                Err(e) => return Err(e.to_string()),
            };
            for (i, e) in page.iter().enumerate() {
                if prev_key.as_deref() != Some(e.info.key.as_str()) {
                    prev_key = Some(e.info.key.clone());
                    newer_modified = None;
                    versions_of_key = 0;
                }
                versions_of_key += 1;
                // Whether this is the only version left of its key (for expired markers).
                let only = versions_of_key == 1
                    && page
                        .get(i + 1)
                        .map(|n| n.info.key != e.info.key)
                        .unwrap_or(!truncated);
                act(
                    api,
                    &bucket,
                    &rules,
                    e,
                    newer_modified,
                    only,
                    min_size,
                    now,
                    &mut pass,
                )?;
                newer_modified = Some(e.info.last_modified);
            }
            match (truncated, page.last()) {
                (true, Some(l)) => {
                    after = Some((l.info.key.clone(), l.info.version_id.clone()));
                }
                _ => break,
            }
        }
    }
    Ok(pass)
}

#[allow(clippy::too_many_arguments)]
fn act(
    api: &Api,
    bucket: &str,
    rules: &[Rule],
    e: &VersionEntry,
    newer_modified: Option<DateTime<Utc>>,
    only_version: bool,
    min_size: u64,
    now: DateTime<Utc>,
    pass: &mut Pass,
) -> Result<(), String> {
    let store = &api.store;
    let info = &e.info;
    let vid = info.version_id.clone();
    // Restores: finish those whose delay has passed, end those whose copy expired.
    if !e.delete_marker {
        if let Some(r) = info.system.get("restore") {
            let mut change: Option<Option<String>> = None;
            if r.contains("ongoing-request=\"true\"") {
                if let Some(req) = info.system.get("restore-request") {
                    let mut parts = req.split('|');
                    let at = parts
                        .next()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc));
                    let days: i64 = parts.next().and_then(|d| d.parse().ok()).unwrap_or(1);
                    let tier = parts.next().unwrap_or("Standard");
                    let class = info
                        .system
                        .get("storage-class")
                        .cloned()
                        .unwrap_or_default();
                    if let Some(at) = at {
                        let ready = at + restore_delay(tier, &class);
                        if ready <= now {
                            let expiry = restore_expiry(ready, days);
                            change = Some(Some(format!(
                                "ongoing-request=\"false\", expiry-date=\"{}\"",
                                crate::s3::http_date(expiry)
                            )));
                            pass.restores_finished += 1;
                        }
                    }
                }
            } else if let Some(exp) = r
                .split("expiry-date=\"")
                .nth(1)
                .and_then(|x| x.split('"').next())
                .and_then(|x| DateTime::parse_from_rfc2822(x).ok())
            {
                if exp.with_timezone(&Utc) <= now {
                    change = Some(None);
                    pass.restores_ended += 1;
                }
            }
            if let Some(c) = change {
                store
                    .update_system(bucket, &info.key, vid.as_deref(), &mut |i| {
                        match &c {
                            Some(v) => {
                                i.system.insert("restore".into(), v.clone());
                            }
                            None => {
                                i.system.remove("restore");
                                i.system.remove("restore-request");
                            }
                        }
                        Ok(())
                    })
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let version = vid.as_deref().unwrap_or("null");
    for rule in rules {
        if !info.key.starts_with(&rule.prefix) {
            continue;
        }
        // Delete markers: a lonely current one goes (ExpiredObjectDeleteMarker), a noncurrent
        // one with the noncurrent versions.
        if e.delete_marker {
            let due_now = if e.is_latest {
                rule.expired_delete_marker && only_version && rule.tags.is_empty()
            } else {
                matches!((newer_modified, rule.noncurrent_expiration_days),
                    (Some(since), Some(d)) if due(since, d) <= now)
            };
            if due_now {
                store
                    .delete_version(bucket, &info.key, version)
                    .map_err(|e| e.to_string())?;
                if e.is_latest {
                    pass.markers_removed += 1;
                } else {
                    pass.noncurrent_expired += 1;
                }
                return Ok(());
            }
            continue;
        }
        if !matches(rule, info) {
            continue;
        }
        // The current version counts from its creation, a noncurrent one from when a newer
        // version replaced it.
        let (since, expire, transitions) = match (e.is_latest, newer_modified) {
            (true, _) => (info.last_modified, rule.expiration_days, &rule.transitions),
            (false, Some(s)) => (
                s,
                rule.noncurrent_expiration_days,
                &rule.noncurrent_transitions,
            ),
            (false, None) => continue,
        };
        if expire.is_some_and(|d| due(since, d) <= now) {
            if e.is_latest {
                // A delete marker on top, when versioned; object lock does not prevent it.
                store
                    .delete_object(bucket, &info.key)
                    .map_err(|e| e.to_string())?;
                pass.expired += 1;
                return Ok(());
            }
            if lock_holds(info, now) {
                pass.kept_by_lock += 1;
                continue;
            }
            store
                .delete_version(bucket, &info.key, version)
                .map_err(|e| e.to_string())?;
            pass.noncurrent_expired += 1;
            return Ok(());
        }
        let current = info
            .system
            .get("storage-class")
            .cloned()
            .unwrap_or_default();
        if info.size >= min_size {
            if let Some(target) = transition_target(transitions, since, now, &current) {
                set_class(api, bucket, info, &target)?;
                pass.transitioned += 1;
            }
        }
    }
    Ok(())
}

fn set_class(api: &Api, bucket: &str, info: &ObjectInfo, class: &str) -> Result<(), String> {
    let class = class.to_string();
    api.store
        .update_system(bucket, &info.key, info.version_id.as_deref(), &mut |i| {
            i.system.insert("storage-class".into(), class.clone());
            i.system.remove("restore");
            i.system.remove("restore-request");
            Ok(())
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs [`run_once`] every `every` until the API shuts down.
pub fn spawn(api: Arc<Api>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let a = api.clone();
            match tokio::task::spawn_blocking(move || run_once(&a)).await {
                Ok(Ok(p)) if p != Pass::default() => tracing::info!(?p, "lifecycle pass"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "lifecycle pass failed"),
                Err(e) => tracing::warn!(error = %e, "lifecycle task panicked"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_rounds_up_to_midnight_utc() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(due(t, 90).to_rfc3339(), "2026-04-02T00:00:00+00:00");
        let m = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(due(m, 1).to_rfc3339(), "2026-01-02T00:00:00+00:00");
    }

    #[test]
    fn the_seed_rule_parses() {
        let doc = crate::protocol::xml::parse(
            br#"<LifecycleConfiguration><Rule><ID>archive</ID><Filter><Prefix>AWSLogs/</Prefix></Filter><Status>Enabled</Status><Transition><Days>90</Days><StorageClass>GLACIER</StorageClass></Transition><NoncurrentVersionExpiration><NoncurrentDays>30</NoncurrentDays></NoncurrentVersionExpiration></Rule><Rule><Status>Disabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>"#,
        )
        .unwrap();
        let rules = parse_rules(&doc);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].prefix, "AWSLogs/");
        assert_eq!(rules[0].transitions, vec![(90, "GLACIER".to_string())]);
        assert_eq!(rules[0].noncurrent_expiration_days, Some(30));
    }
}
