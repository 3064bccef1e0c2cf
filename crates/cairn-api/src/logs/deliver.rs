//! A trail's delivery to its CloudWatch Logs log group (`CloudWatchLogsLogGroupArn`), through
//! the role CloudTrail assumes (`CloudWatchLogsRoleArn`).
//!
//! A journal consumer (`cwlogs`): each trail with a log group keeps its own position in the
//! journal, stored in the log store **in the same transaction** as the events it delivers, so
//! after a crash delivery resumes exactly where the stored events end (exactly once). Each
//! event the trail selects becomes one log event in the stream `<account>_CloudTrail_<region>`
//! whose message is the record's JSON. What CloudTrail checks is checked at every round: the
//! group exists, the role exists, trusts `cloudtrail.amazonaws.com` and allows
//! `logs:CreateLogStream` and `logs:PutLogEvents` on the stream, the group's KMS key is usable.
//! A failing trail keeps its position (its events wait in the journal), records the error
//! (GetTrailStatus' `LatestCloudWatchLogsDeliveryError`) and is retried every few seconds;
//! other trails go on.
//!
//! Which trails select an event is decided with the trails as they are when the event is
//! delivered (normally well under a second after it was recorded), not as they were when it
//! was recorded — but never with a state older than the event: only records below the trail
//! engine's applied position are read (a StartLogging is always seen by the events after it).

use super::groups::{group_key, LogGroup};
use super::streams::{stream_key, LogStream};
use crate::Api;
use cairn_iam::policy::{self, ConditionKeys, Decision, Policy, Principal, RequestContext};
use cairn_logs::{Batch, NewEvent};
use cairn_trail::entry::{self, Entry};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The journal consumer's name.
pub const CONSUMER: &str = "cwlogs";
const CLOUDTRAIL: &str = "cloudtrail.amazonaws.com";
/// How long a failing trail waits before its next attempt.
const RETRY: Duration = Duration::from_secs(5);
/// Records read in one round.
const ROUND: usize = 20_000;

/// What GetTrailStatus reports of a trail's delivery to CloudWatch Logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CwStatus {
    /// Milliseconds since the epoch.
    pub latest_delivery: Option<i64>,
    pub latest_error: Option<String>,
    /// Since when delivery has failed without a success (ms).
    #[serde(default)]
    pub failing_since: Option<i64>,
}

/// How long a trail's events wait in the journal for a failing delivery to recover. Beyond
/// it the backlog is given up (it stays in the trail's S3 log files and LookupEvents), so
/// a broken role or deleted group cannot make the journal grow without end.
pub const MAX_BACKLOG_MS: i64 = 24 * 3_600_000;

fn position_key(trail: &str) -> String {
    format!("cwlogs/pos/{trail}")
}

fn status_key(trail: &str) -> String {
    format!("cwlogs/status/{trail}")
}

/// A trail's delivery status.
pub fn status(api: &Api, trail: &str) -> CwStatus {
    api.logs
        .state(&status_key(trail))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Called once a trail's new CloudWatch Logs configuration is durable: its delivery starts
/// at the journal's end now (every event recorded after the change was acknowledged), unless
/// it already delivers.
pub fn start_at_end(api: &Api, trail: &str) -> Result<(), crate::protocol::ApiError> {
    let key = position_key(trail);
    if api
        .logs
        .state(&key)
        .map_err(super::events::store_error)?
        .is_none()
    {
        let p = api.engine.journal().next_seq();
        api.logs
            .set_states(&[(key, Some(p.to_le_bytes().to_vec()))])
            .map_err(super::events::store_error)?;
    }
    Ok(())
}

/// Why a trail cannot deliver to its log group: (CloudTrail's error code, message).
pub type Refusal = (&'static str, String);

/// The log group an ARN names in this account (`arn:aws:logs:REGION:ACCOUNT:log-group:NAME`,
/// `:*` allowed): its region and name.
pub fn parse_group_arn(account: &str, arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("arn:aws:logs:")?;
    let (region, rest) = rest.split_once(':')?;
    let (acct, rest) = rest.split_once(':')?;
    let name = rest.strip_prefix("log-group:")?.trim_end_matches(":*");
    (acct == account && !region.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| (region.to_string(), name.to_string()))
}

/// The stream of a trail's events from `region`.
pub fn stream_name(account: &str, region: &str) -> String {
    format!("{account}_CloudTrail_{region}")
}

/// What CloudTrail checks before it delivers to a log group (and when a trail is created or
/// updated with one): the group exists; the role exists, trusts CloudTrail for this trail, and
/// may create streams in and put events into the group. Returns the group.
pub fn check(
    api: &Api,
    trail_arn: &str,
    group_arn: &str,
    role_arn: &str,
) -> Result<LogGroup, Refusal> {
    let account = api.opts.account.as_str();
    let bad_group = || {
        (
            "InvalidCloudWatchLogsLogGroupArnException",
            format!("Log group {group_arn} does not exist or is not in this account."),
        )
    };
    let (region, name) = parse_group_arn(account, group_arn).ok_or_else(bad_group)?;
    let group: LogGroup = api
        .meta
        .get(&group_key(&region, &name))
        .ok()
        .flatten()
        .ok_or_else(bad_group)?;
    let bad_role = |why: &str| {
        (
            "InvalidCloudWatchLogsRoleArnException",
            format!("Role {role_arn} {why}."),
        )
    };
    let role_name = role_arn
        .strip_prefix(&format!("arn:aws:iam::{account}:role/"))
        .and_then(|r| r.rsplit('/').next())
        .ok_or_else(|| bad_role("is not a role of this account"))?;
    let role = api
        .iam
        .get_role(role_name)
        .ok()
        .filter(|r| r.arn(account) == role_arn)
        .ok_or_else(|| bad_role("does not exist"))?;
    let trust =
        Policy::parse(&role.trust_policy).map_err(|_| bad_role("has no valid trust policy"))?;
    let service = Principal {
        arn: CLOUDTRAIL.into(),
        account: account.into(),
        role_arn: None,
        service: Some(CLOUDTRAIL.into()),
    };
    let mut keys = ConditionKeys::new();
    keys.set("aws:SourceArn", trail_arn);
    keys.set("aws:SourceAccount", account);
    keys.set("aws:PrincipalIsAWSService", "true");
    let rc = RequestContext {
        principal: &service,
        action: "sts:AssumeRole",
        resource: role_arn,
        keys: &keys,
    };
    if trust.principal_allows(&rc) != Some(true) {
        return Err(bad_role("does not let cloudtrail.amazonaws.com assume it"));
    }
    let policies: Vec<Policy> = role
        .policies
        .values()
        .filter_map(|d| Policy::parse(d).ok())
        .collect();
    let session = Principal {
        arn: format!(
            "arn:aws:sts::{account}:assumed-role/{}/CloudTrail",
            role.name
        ),
        account: account.into(),
        role_arn: Some(role_arn.into()),
        service: None,
    };
    let keys = ConditionKeys::new();
    let stream_arn = format!(
        "arn:aws:logs:{region}:{account}:log-group:{name}:log-stream:{}",
        stream_name(account, &region)
    );
    for action in ["logs:CreateLogStream", "logs:PutLogEvents"] {
        let rc = RequestContext {
            principal: &session,
            action,
            resource: &stream_arn,
            keys: &keys,
        };
        if policy::evaluate(&policies, &rc) != Decision::Allow {
            return Err((
                "InvalidCloudWatchLogsLogGroupArnException",
                format!("Access denied. Verify in IAM that the role has adequate permissions: {role_arn} may not {action} on {stream_arn}."),
            ));
        }
    }
    Ok(group)
}

/// A trail with a log group.
struct Target {
    trail: cairn_trail::TrailState,
    group_arn: String,
    role_arn: String,
}

/// The delivery worker.
pub struct CwDelivery {
    api: Arc<Api>,
    stop: AtomicBool,
    /// Trails whose last attempt failed: when to try again.
    failing: Mutex<HashMap<String, Instant>>,
    reader: Mutex<Option<cairn_journal::JournalReader>>,
    cursor_committed: Mutex<(Option<u64>, Instant)>,
}

impl CwDelivery {
    pub fn new(api: Arc<Api>) -> Arc<CwDelivery> {
        Arc::new(CwDelivery {
            api,
            stop: AtomicBool::new(false),
            failing: Mutex::new(HashMap::new()),
            reader: Mutex::new(None),
            cursor_committed: Mutex::new((None, Instant::now())),
        })
    }

    fn targets(&self, trails: Vec<cairn_trail::TrailState>) -> Vec<Target> {
        let mut out = Vec::new();
        for t in trails {
            if let Some((g, r)) =
                crate::cloudtrail::cloud_watch_target(&self.api.meta, &t.config.name)
            {
                out.push(Target {
                    trail: t,
                    group_arn: g,
                    role_arn: r,
                });
            }
        }
        out
    }

    fn positions(&self) -> Result<HashMap<String, u64>, String> {
        let mut out = HashMap::new();
        for (k, v) in self
            .api
            .logs
            .states("cwlogs/pos/")
            .map_err(|e| e.to_string())?
        {
            if let (Some(name), Ok(b)) = (
                k.strip_prefix("cwlogs/pos/"),
                <[u8; 8]>::try_from(v.as_slice()),
            ) {
                out.insert(name.to_string(), u64::from_le_bytes(b));
            }
        }
        Ok(out)
    }

    fn set_status(&self, trail: &str, st: &CwStatus) {
        let v = serde_json::to_vec(st).unwrap_or_default();
        if let Err(e) = self.api.logs.set_states(&[(status_key(trail), Some(v))]) {
            tracing::warn!(error = %e, "recording a CloudWatch Logs delivery status failed");
        }
    }

    /// One round: delivers what the journal holds beyond each ready trail's position (at most
    /// [`ROUND`] records). Returns how many records were read.
    pub fn step(&self) -> Result<usize, String> {
        let journal = self.api.engine.journal().clone();
        journal
            .register_consumer(CONSUMER)
            .map_err(|e| e.to_string())?;
        // Records are read only below the position the trails' state reflects: a record read
        // with an older state could miss the StartLogging just before it (and be skipped).
        let (applied, trails) = self.api.engine.trails_at();
        let targets = self.targets(trails);
        let mut positions = self.positions()?;
        // New targets start where the state they were found in was taken (every event after
        // it is theirs to judge); trails that lost their log group forget their position
        // (and status).
        let mut changes = Vec::new();
        for t in &targets {
            if !positions.contains_key(&t.trail.config.name) {
                let p = applied;
                positions.insert(t.trail.config.name.clone(), p);
                changes.push((
                    position_key(&t.trail.config.name),
                    Some(p.to_le_bytes().to_vec()),
                ));
            }
        }
        let gone: Vec<String> = positions
            .keys()
            .filter(|n| !targets.iter().any(|t| &t.trail.config.name == *n))
            .cloned()
            .collect();
        for n in gone {
            positions.remove(&n);
            changes.push((position_key(&n), None));
            changes.push((status_key(&n), None));
        }
        if !changes.is_empty() {
            self.api
                .logs
                .set_states(&changes)
                .map_err(|e| e.to_string())?;
        }
        self.commit_cursor(&positions, journal.next_seq());
        let now = Instant::now();
        let ready: Vec<&Target> = {
            let f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            targets
                .iter()
                .filter(|t| f.get(&t.trail.config.name).is_none_or(|at| *at <= now))
                .collect()
        };
        let Some(from) = ready
            .iter()
            .filter_map(|t| positions.get(&t.trail.config.name))
            .min()
            .copied()
        else {
            return Ok(0);
        };
        if from >= applied {
            return Ok(0);
        }
        // What each ready trail may deliver now (checked before reading).
        let mut checked: HashMap<String, Result<LogGroup, Refusal>> = HashMap::new();
        for t in &ready {
            checked.insert(
                t.trail.config.name.clone(),
                check(&self.api, &t.trail.config.arn(), &t.group_arn, &t.role_arn),
            );
        }
        let mut slot = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().map(|r| r.position()) != Some(from) {
            *slot = Some(journal.reader(from).map_err(|e| e.to_string())?);
        }
        let Some(reader) = slot.as_mut() else {
            return Ok(0);
        };
        // trail → region → events
        let mut batches: HashMap<String, BTreeMap<String, Vec<NewEvent>>> = HashMap::new();
        let mut n = 0;
        while n < ROUND && reader.position() < applied {
            let Some((seq, bytes)) = reader.next_record().map_err(|e| e.to_string())? else {
                break;
            };
            n += 1;
            let Ok(Entry::Event { header, json } | Entry::Resolved { header, json, .. }) =
                entry::decode(&bytes)
            else {
                continue;
            };
            for t in &ready {
                let st = &t.trail;
                if positions.get(&st.config.name).is_none_or(|p| *p > seq)
                    || !st.logging
                    || !st.config.admits_region(&header.facts)
                    || !st.config.selectors.matches(&header.facts)
                {
                    continue;
                }
                let Ok(message) = String::from_utf8(json.clone()) else {
                    continue;
                };
                batches
                    .entry(st.config.name.clone())
                    .or_default()
                    .entry(header.facts.region.clone())
                    .or_default()
                    .push(NewEvent {
                        timestamp: header.time * 1000,
                        message,
                    });
            }
        }
        let end = reader.position();
        drop(slot);
        let ingestion = chrono::Utc::now().timestamp_millis();
        let mut stored = Vec::new();
        let mut new_positions = Vec::new();
        let mut delivered = Vec::new();
        for t in &ready {
            let name = &t.trail.config.name;
            let events = batches.remove(name).unwrap_or_default();
            let outcome = match checked.remove(name) {
                Some(Ok(g)) => self.prepare(&g, events).map(|b| (g, b)),
                Some(Err((code, m))) => Err(format!("{code}: {m}")),
                None => continue,
            };
            match outcome {
                Ok((_, b)) => {
                    let any = b.iter().any(|x| !x.events.is_empty());
                    stored.extend(b);
                    // A trail already past this round's end (it was read from further back
                    // for a slower trail) keeps its position.
                    let pos = positions.get(name).copied().unwrap_or(end).max(end);
                    new_positions.push((position_key(name), pos.to_le_bytes().to_vec()));
                    if any || status(&self.api, name).latest_error.is_some() {
                        delivered.push((name.clone(), any));
                    }
                    self.failing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(name);
                }
                Err(why) => {
                    let prev = status(&self.api, name);
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let since = prev.failing_since.unwrap_or(now_ms);
                    if prev.latest_error.as_deref() != Some(why.as_str()) {
                        tracing::warn!(trail = %name, error = %why, "delivery to CloudWatch Logs failed; events wait in the journal");
                    }
                    let mut st = CwStatus {
                        latest_error: Some(why.clone()),
                        failing_since: Some(since),
                        ..prev
                    };
                    if now_ms - since > MAX_BACKLOG_MS {
                        let at = journal.next_seq();
                        tracing::warn!(trail = %name, "CloudWatch Logs delivery has failed for more than 24 hours; its backlog is given up");
                        st.latest_error = Some(format!(
                            "{why} (delivery failed for more than 24 hours: events recorded before {} were not delivered to CloudWatch Logs)",
                            cairn_record::time::iso(chrono::Utc::now())
                        ));
                        st.failing_since = Some(now_ms);
                        self.api
                            .logs
                            .set_states(&[(position_key(name), Some(at.to_le_bytes().to_vec()))])
                            .map_err(|e| e.to_string())?;
                    }
                    self.set_status(name, &st);
                    self.failing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), Instant::now() + RETRY);
                }
            }
        }
        for (name, any) in &delivered {
            let st = CwStatus {
                latest_delivery: if *any {
                    Some(ingestion)
                } else {
                    status(&self.api, name).latest_delivery
                },
                latest_error: None,
                failing_since: None,
            };
            new_positions.push((
                status_key(name),
                serde_json::to_vec(&st).unwrap_or_default(),
            ));
        }
        for b in &mut stored {
            b.ingestion = ingestion;
        }
        if !stored.is_empty() || !new_positions.is_empty() {
            self.api
                .logs
                .put_batches(&stored, &new_positions)
                .map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    /// The batches of one trail's events for its group (streams created as needed), with
    /// their metric points; fails when the group's key cannot be used.
    fn prepare(
        &self,
        g: &LogGroup,
        by_region: BTreeMap<String, Vec<NewEvent>>,
    ) -> Result<Vec<Batch>, String> {
        let ring = super::events::ring(&self.api, g);
        if let Some(Err(why)) = ring.slots.get(&ring.current) {
            return Err(format!("KMS: {why}"));
        }
        let account = self.api.opts.account.clone();
        let mut out = Vec::new();
        for (region, events) in by_region {
            let stream = stream_name(&account, &region);
            let key = stream_key(&g.region, &g.name, &stream);
            if self
                .api
                .meta
                .get::<LogStream>(&key)
                .map_err(|e| e.message)?
                .is_none()
            {
                self.api
                    .meta
                    .put(
                        &key,
                        &LogStream {
                            name: stream.clone(),
                            created: chrono::Utc::now().timestamp_millis(),
                        },
                    )
                    .map_err(|e| e.message)?;
            }
            self.api
                .logs
                .create_stream(&g.store_key(), &stream)
                .map_err(|e| e.to_string())?;
            let points = super::metrics::points(&self.api, g, &events).map_err(|e| e.message)?;
            out.push(Batch {
                group: g.store_key(),
                stream,
                events,
                ingestion: 0,
                ring: ring.clone(),
                points,
                generation: Some(g.created),
            });
        }
        Ok(out)
    }

    /// Lets the journal drop what every trail has delivered (lazily: every few seconds).
    fn commit_cursor(&self, positions: &HashMap<String, u64>, end: u64) {
        let target = positions.values().min().copied().unwrap_or(end);
        let mut c = self
            .cursor_committed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if c.0 == Some(target) || (c.0.is_some() && c.1.elapsed() < Duration::from_secs(5)) {
            return;
        }
        match self.api.engine.journal().commit_cursor(CONSUMER, target) {
            Ok(()) => *c = (Some(target), Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "committing the CloudWatch Logs delivery cursor failed")
            }
        }
    }

    /// Runs the worker on its own thread until [`CwDelivery::stop`].
    pub fn spawn(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let d = self.clone();
        std::thread::Builder::new()
            .name("cwlogs-delivery".into())
            .spawn(move || {
                while !d.stop.load(Ordering::Acquire) {
                    match d.step() {
                        Ok(n) if n >= ROUND => {}
                        Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                        Err(e) => {
                            tracing::error!(error = %e, "CloudWatch Logs delivery failed; retrying");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            })
            .unwrap_or_else(|_| std::thread::spawn(|| {}))
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}
