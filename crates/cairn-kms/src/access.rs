//! Who may use a key, decided as AWS KMS decides it: the key policy is the root of trust.
//! An explicit deny in the key policy or the caller's IAM policies refuses. Otherwise the key
//! policy must allow the caller itself (or its role, or a service), or allow the caller's
//! account — then the caller's own IAM policies must allow too (the account root needs
//! nothing more). Failing both, a grant for the caller naming the operation, whose
//! constraints the request's encryption context meets, allows.

use crate::{Context, Grant, KeyRecord};
use cairn_iam::policy::{self, ConditionKeys, Decision, Policy, Principal, RequestContext};

/// The caller as the key sees it.
pub struct Asker<'a> {
    pub principal: &'a Principal,
    /// The caller's IAM policies; `None` for the account root and for AWS services.
    pub identity_policies: Option<&'a [Policy]>,
}

/// Why a call was refused (the message of AccessDeniedException).
#[derive(Debug)]
pub struct Denied(pub String);

/// The condition keys KMS adds for a call with this encryption context: one
/// `kms:EncryptionContext:<key>` per pair, `kms:EncryptionContextKeys`, `kms:CallerAccount`.
pub fn context_keys(keys: &mut ConditionKeys, account: &str, context: &Context) {
    for (k, v) in context {
        keys.set(&format!("kms:EncryptionContext:{k}"), v.clone());
    }
    keys.set_many(
        "kms:EncryptionContextKeys",
        context.keys().cloned().collect(),
    );
    keys.set("kms:CallerAccount", account);
}

/// Decides `action` (`kms:Decrypt`, …) on `key` for `asker`.
pub fn decide(
    key: &KeyRecord,
    key_policy: &Policy,
    grants: &[Grant],
    asker: &Asker<'_>,
    action: &str,
    keys: &ConditionKeys,
    context: &Context,
) -> Result<(), Denied> {
    let rc = RequestContext {
        principal: asker.principal,
        action,
        resource: &key.arn,
        keys,
    };
    let identity = asker.identity_policies.unwrap_or(&[]);
    let denied = |why: &str| {
        Denied(format!(
            "User: {} is not authorized to perform: {action} on resource: {} {why}",
            asker.principal.arn, key.arn
        ))
    };
    if policy::evaluate_sets(&[identity, std::slice::from_ref(key_policy)], &rc)
        == Decision::ExplicitDeny
    {
        return Err(denied("with an explicit deny"));
    }
    match key_policy.principal_allows(&rc) {
        Some(true) => return Ok(()),
        Some(false) => match asker.identity_policies {
            None => return Ok(()),
            Some(p) if policy::evaluate(p, &rc) == Decision::Allow => return Ok(()),
            Some(_) => {}
        },
        None => {}
    }
    let op = action.strip_prefix("kms:").unwrap_or(action);
    let who = [
        Some(asker.principal.arn.as_str()),
        asker.principal.role_arn.as_deref(),
    ];
    let granted = grants.iter().any(|g| {
        who.contains(&Some(g.grantee.as_str()))
            && g.operations.iter().any(|o| o == op)
            && g.constraints.as_ref().is_none_or(|c| c.admits(context))
    });
    if granted {
        return Ok(());
    }
    Err(denied("because no resource-based policy allows the action"))
}

/// Checks a key policy document as KMS does on CreateKey/PutKeyPolicy: a valid policy, at
/// most 32 KB, every statement naming a principal and only KMS actions. `Err` carries
/// MalformedPolicyDocumentException's message.
pub fn check_policy(text: &str) -> Result<Policy, String> {
    if text.len() > 32 * 1024 {
        return Err("Policy exceeds the maximum size of 32768 bytes.".into());
    }
    let p = Policy::parse(text).map_err(|e| format!("The policy is malformed: {e}"))?;
    p.check_key_policy(|a| a == "*" || a.to_ascii_lowercase().starts_with("kms:"))
        .map_err(|e| e.0)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{default_policy, KeyState};

    fn key(policy: &str) -> KeyRecord {
        KeyRecord {
            key_id: "k".into(),
            arn: "arn:aws:kms:us-east-1:123456789012:key/k".into(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            created: chrono::Utc::now(),
            description: String::new(),
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            policy: policy.into(),
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation: None,
            on_demand_rotation: None,
            current_version: 1,
            materials: vec![],
            tags: vec![],
            aws_managed: false,
        }
    }

    fn who(arn: &str, service: Option<&str>) -> Principal {
        Principal {
            arn: arn.into(),
            account: "123456789012".into(),
            role_arn: None,
            service: service.map(str::to_string),
        }
    }

    const SEED: &str = r#"{"Version":"2012-10-17","Statement":[
      {"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"},
      {"Sid":"Allow CloudTrail to encrypt logs","Effect":"Allow","Principal":{"Service":"cloudtrail.amazonaws.com"},
       "Action":["kms:GenerateDataKey","kms:Decrypt"],
       "Condition":{"StringEquals":{"AWS:SourceArn":"arn:aws:cloudtrail:us-east-1:123456789012:trail/acme-audit-trail"}}}]}"#;

    #[test]
    fn the_seed_statement_grants_cloudtrail_for_its_trail_only() {
        let k = key(SEED);
        let p = check_policy(SEED).unwrap();
        let ct = who("cloudtrail.amazonaws.com", Some("cloudtrail.amazonaws.com"));
        let asker = Asker {
            principal: &ct,
            identity_policies: None,
        };
        let mut keys = ConditionKeys::new();
        keys.set(
            "aws:SourceArn",
            "arn:aws:cloudtrail:us-east-1:123456789012:trail/acme-audit-trail",
        );
        assert!(decide(
            &k,
            &p,
            &[],
            &asker,
            "kms:GenerateDataKey",
            &keys,
            &Context::new()
        )
        .is_ok());
        assert!(decide(&k, &p, &[], &asker, "kms:Encrypt", &keys, &Context::new()).is_err());
        keys.set(
            "aws:SourceArn",
            "arn:aws:cloudtrail:us-east-1:123456789012:trail/other",
        );
        assert!(decide(
            &k,
            &p,
            &[],
            &asker,
            "kms:GenerateDataKey",
            &keys,
            &Context::new()
        )
        .is_err());
    }

    #[test]
    fn account_statements_delegate_to_iam_and_others_need_a_grant() {
        let k = key(&default_policy("123456789012"));
        let p = check_policy(&k.policy).unwrap();
        let root = who("arn:aws:iam::123456789012:root", None);
        let keys = ConditionKeys::new();
        let ctx = Context::new();
        assert!(decide(
            &k,
            &p,
            &[],
            &Asker {
                principal: &root,
                identity_policies: None
            },
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_ok());
        let bob = who("arn:aws:iam::123456789012:user/bob", None);
        let none: Vec<Policy> = vec![];
        assert!(decide(
            &k,
            &p,
            &[],
            &Asker {
                principal: &bob,
                identity_policies: Some(&none)
            },
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_err());
        let allow = vec![Policy::parse(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#).unwrap()];
        assert!(decide(
            &k,
            &p,
            &[],
            &Asker {
                principal: &bob,
                identity_policies: Some(&allow)
            },
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_ok());
        // A key policy without the account statement: IAM policies alone do nothing.
        let only_alice = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"kms:*","Resource":"*"}]}"#;
        let k2 = key(only_alice);
        let p2 = check_policy(only_alice).unwrap();
        assert!(decide(
            &k2,
            &p2,
            &[],
            &Asker {
                principal: &bob,
                identity_policies: Some(&allow)
            },
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_err());
        assert!(decide(
            &k2,
            &p2,
            &[],
            &Asker {
                principal: &root,
                identity_policies: None
            },
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_err());
        // A grant with a context constraint.
        let g = Grant {
            grant_id: "g".into(),
            key_id: "k".into(),
            name: None,
            created: chrono::Utc::now(),
            grantee: bob.arn.clone(),
            retiring: None,
            issuing_account: "123456789012".into(),
            operations: vec!["Decrypt".into()],
            constraints: Some(crate::GrantConstraints {
                encryption_context_subset: Some([("a".to_string(), "1".to_string())].into()),
                encryption_context_equals: None,
            }),
            token: "t".into(),
        };
        let asker = Asker {
            principal: &bob,
            identity_policies: Some(&none),
        };
        assert!(decide(
            &k2,
            &p2,
            std::slice::from_ref(&g),
            &asker,
            "kms:Decrypt",
            &keys,
            &[("a".to_string(), "1".to_string())].into()
        )
        .is_ok());
        assert!(decide(
            &k2,
            &p2,
            std::slice::from_ref(&g),
            &asker,
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_err());
        assert!(decide(
            &k2,
            &p2,
            std::slice::from_ref(&g),
            &asker,
            "kms:Encrypt",
            &keys,
            &[("a".to_string(), "1".to_string())].into()
        )
        .is_err());
        // An explicit deny in the caller's policies beats the key policy.
        let deny = vec![Policy::parse(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:*","Resource":"*"}]}"#).unwrap()];
        let alice = who("arn:aws:iam::123456789012:user/alice", None);
        assert!(decide(
            &k2,
            &p2,
            &[],
            &Asker {
                principal: &alice,
                identity_policies: Some(&deny)
            },
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_err());
        assert!(decide(
            &k2,
            &p2,
            &[],
            &Asker {
                principal: &alice,
                identity_policies: Some(&none)
            },
            "kms:Decrypt",
            &keys,
            &ctx
        )
        .is_ok());
    }

    #[test]
    fn policies_must_name_principals_and_kms_actions() {
        assert!(check_policy("not json").is_err());
        assert!(check_policy(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#).is_err());
        assert!(check_policy(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}]}"#).is_err());
        assert!(check_policy(SEED).is_ok());
    }
}
