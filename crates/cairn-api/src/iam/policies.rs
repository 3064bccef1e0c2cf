//! Inline policies of users and roles — one path serves both ([`Holder`]): Put, Get, Delete
//! and List{User,Role}Policies.

use super::{defer_iam, entity_arn, iam_error, nothing, result, url_encoded, PolicyPut, PolicyRef};
use crate::edge::Ctx;
use crate::protocol::xml::Members;
use crate::protocol::{ApiError, Reply};
use cairn_iam::identity::Holder;
use serde::ser::SerializeStruct;
use serde::Serialize;

/// GetUserPolicy / GetRolePolicy: the holder's name under `UserName` or `RoleName`.
struct PolicyXml {
    holder: Holder,
    owner: String,
    name: String,
    document: String,
}

impl Serialize for PolicyXml {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Policy", 3)?;
        st.serialize_field(holder_field(self.holder), &self.owner)?;
        st.serialize_field("PolicyName", &self.name)?;
        st.serialize_field("PolicyDocument", &self.document)?;
        st.end()
    }
}

fn holder_field(h: Holder) -> &'static str {
    match h {
        Holder::User => "UserName",
        Holder::Role => "RoleName",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyNames {
    policy_names: Members<String>,
    is_truncated: bool,
}

/// A policy operation on a user's or a role's inline policies.
pub(super) enum PolicyCall {
    Put(PolicyPut),
    Get(PolicyRef),
    Delete(PolicyRef),
    List(String),
}

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    action: &str,
    holder: Holder,
    call: PolicyCall,
) -> Result<Reply, ApiError> {
    let owner = match &call {
        PolicyCall::Put(p) => &p.policy.owner,
        PolicyCall::Get(p) | PolicyCall::Delete(p) => &p.owner,
        PolicyCall::List(o) => o,
    };
    let arn = entity_arn(ctx, holder.kind(), owner);
    ctx.authorize(action, &arn)?;
    let iam = ctx.api.iam.clone();
    match call {
        PolicyCall::Put(PolicyPut { policy, document }) => {
            iam.check_policy_change(holder, &policy.owner, &policy.name, Some(&document))
                .map_err(iam_error)?;
            defer_iam(ctx, move |d| {
                d.put_policy(holder, &policy.owner, &policy.name, &document)
            });
            Ok(nothing(ctx))
        }
        PolicyCall::Delete(p) => {
            iam.check_policy_change(holder, &p.owner, &p.name, None)
                .map_err(iam_error)?;
            defer_iam(ctx, move |d| d.delete_policy(holder, &p.owner, &p.name));
            Ok(nothing(ctx))
        }
        PolicyCall::Get(p) => {
            let doc = iam
                .get_policy(holder, &p.owner, &p.name)
                .map_err(iam_error)?;
            let answer = PolicyXml {
                holder,
                owner: p.owner,
                name: p.name,
                document: url_encoded(&doc),
            };
            Ok(result(ctx, &answer))
        }
        PolicyCall::List(owner) => {
            let names = iam.list_policies(holder, &owner).map_err(iam_error)?;
            let answer = PolicyNames {
                policy_names: Members::of(names),
                is_truncated: false,
            };
            Ok(result(ctx, &answer))
        }
    }
}
