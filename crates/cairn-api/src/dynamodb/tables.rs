//! Control-plane calls, the management events: tables, TTL, backups and restores, exports
//! and imports, contributor insights, Kinesis destinations, global tables, tags and resource
//! policies. Each is authorized as `dynamodb:<Action>` on the resources it names (a table,
//! an index, a backup, a global table; `*` for account-wide listings), ARNs the caller gives
//! must be cairn's own, and they reach the upstream in its own account's form. Answers come
//! back with the upstream's ARNs replaced by cairn's.

use super::items::{arn, own_resource, table_name};
use super::upstream::{Answer, Target};
use super::{Call, DynamoOp};
use crate::edge::Ctx;
use crate::protocol::{json, ApiError, Reply};
use cairn_record::Resource;
use serde_json::Value;

/// Runs a control-plane call.
pub async fn handle(ctx: &mut Ctx<'_>, target: &Target, call: Call) -> Result<Reply, ApiError> {
    let Call { op, mut body, host } = call;
    let name = op.name();
    let read_only = !DynamoOp::mutates(name);
    ctx.audit.read_only = read_only;
    ctx.audit.api_version = Some("2012-08-10");
    let state = ctx.api.dynamodb.clone();

    // The resources the call names, as cairn's ARNs; members holding ARNs are mapped to
    // the upstream's form below.
    let mut resources: Vec<String> = Vec::new();
    let mut tables: Vec<String> = Vec::new();
    let mut arn_members: Vec<&str> = Vec::new();
    use DynamoOp as Op;
    match &op {
        Op::CreateTable(t)
        | Op::DeleteTable(t)
        | Op::DescribeTable(t)
        | Op::UpdateTable(t)
        | Op::DescribeTimeToLive(t)
        | Op::UpdateTimeToLive(t)
        | Op::DescribeContinuousBackups(t)
        | Op::UpdateContinuousBackups(t)
        | Op::DescribeContributorInsights(t)
        | Op::UpdateContributorInsights(t)
        | Op::DescribeKinesisStreamingDestination(t)
        | Op::EnableKinesisStreamingDestination(t)
        | Op::DisableKinesisStreamingDestination(t)
        | Op::UpdateKinesisStreamingDestination(t)
        | Op::DescribeTableReplicaAutoScaling(t)
        | Op::UpdateTableReplicaAutoScaling(t)
        | Op::CreateBackup(t)
        | Op::StartBulkPutItems(t) => {
            let table = table_name(ctx, &t.table_name, "tableName")?;
            body.insert("TableName".into(), Value::String(table.clone()));
            tables.push(table);
        }
        Op::ListTables(_)
        | Op::DescribeLimits(_)
        | Op::DescribeEndpoints(_)
        | Op::ListGlobalTables(_)
        | Op::ListBulkOperations(_) => resources.push("*".into()),
        Op::ListBackups(l) | Op::ListContributorInsights(l) => {
            if let Some(t) = &l.table_name {
                let table = table_name(ctx, t, "tableName")?;
                body.insert("TableName".into(), Value::String(table));
            }
            resources.push("*".into());
        }
        Op::ListExports(l) | Op::ListImports(l) => {
            if let Some(a) = &l.table_arn {
                own_resource(ctx, a, "tableArn")?;
                arn_members.push("TableArn");
            }
            resources.push("*".into());
        }
        Op::TagResource(r)
        | Op::UntagResource(r)
        | Op::ListTagsOfResource(r)
        | Op::GetResourcePolicy(r)
        | Op::PutResourcePolicy(r)
        | Op::DeleteResourcePolicy(r) => {
            let res = own_resource(ctx, &r.resource_arn, "resourceArn")?;
            resources.push(arn(ctx, &res));
            arn_members.push("ResourceArn");
        }
        Op::DeleteBackup(b) | Op::DescribeBackup(b) => {
            let res = own_resource(ctx, &b.backup_arn, "backupArn")?;
            resources.push(arn(ctx, &res));
            arn_members.push("BackupArn");
        }
        Op::RestoreTableFromBackup(r) => {
            let res = own_resource(ctx, &r.backup_arn, "backupArn")?;
            resources.push(arn(ctx, &res));
            arn_members.push("BackupArn");
            let table = table_name(ctx, &r.target_table_name, "targetTableName")?;
            body.insert("TargetTableName".into(), Value::String(table.clone()));
            tables.push(table);
        }
        Op::RestoreTableToPointInTime(r) => {
            match (&r.source_table_arn, &r.source_table_name) {
                (Some(_), Some(_)) => {
                    // Authorizing one and forwarding both would let the upstream pick.
                    return Err(ApiError::client(
                        "ValidationException",
                        "Only one of SourceTableArn and SourceTableName may be given",
                    ));
                }
                (Some(a), None) => {
                    let res = own_resource(ctx, a, "sourceTableArn")?;
                    resources.push(arn(ctx, &res));
                    arn_members.push("SourceTableArn");
                }
                (None, Some(n)) => {
                    let table = table_name(ctx, n, "sourceTableName")?;
                    body.insert("SourceTableName".into(), Value::String(table.clone()));
                    tables.push(table);
                }
                (None, None) => {
                    return Err(ApiError::client(
                        "ValidationException",
                        "Either SourceTableArn or SourceTableName must be given",
                    ))
                }
            }
            let table = table_name(ctx, &r.target_table_name, "targetTableName")?;
            body.insert("TargetTableName".into(), Value::String(table.clone()));
            tables.push(table);
        }
        Op::ExportTableToPointInTime(e) => {
            let res = own_resource(ctx, &e.table_arn, "tableArn")?;
            resources.push(arn(ctx, &res));
            arn_members.push("TableArn");
        }
        Op::DescribeExport(e) => {
            let res = own_resource(ctx, &e.export_arn, "exportArn")?;
            resources.push(arn(ctx, &res));
            arn_members.push("ExportArn");
        }
        Op::DescribeImport(i) => {
            let res = own_resource(ctx, &i.import_arn, "importArn")?;
            resources.push(arn(ctx, &res));
            arn_members.push("ImportArn");
        }
        Op::ImportTable(i) => {
            let table = table_name(ctx, &i.table_creation_parameters.table_name, "tableName")?;
            if let Some(Value::Object(p)) = body.get_mut("TableCreationParameters") {
                p.insert("TableName".into(), Value::String(table.clone()));
            }
            tables.push(table);
        }
        Op::DescribeBulkOperation(b) | Op::CancelBulkOperation(b) => {
            let res = own_resource(ctx, &b.bulk_operation_arn, "bulkOperationArn")?;
            resources.push(arn(ctx, &res));
            arn_members.push("BulkOperationArn");
        }
        Op::CreateGlobalTable(g)
        | Op::DescribeGlobalTable(g)
        | Op::DescribeGlobalTableSettings(g)
        | Op::UpdateGlobalTable(g)
        | Op::UpdateGlobalTableSettings(g) => {
            let table = table_name(ctx, &g.global_table_name, "globalTableName")?;
            resources.push(format!(
                "arn:aws:dynamodb::{}:global-table/{table}",
                ctx.api.opts.account
            ));
            tables.push(table);
        }
        _ => {
            return Err(ApiError::internal(format!(
                "{name} is not a control-plane call"
            )))
        }
    }
    for t in &tables {
        resources.push(arn(ctx, &format!("table/{t}")));
    }

    ctx.audit.request_parameters =
        (!body.is_empty()).then(|| super::records::lower_camel_deep(&Value::Object(body.clone())));
    ctx.audit.resources = Some(
        resources
            .iter()
            .filter(|r| r.contains(":table/"))
            .map(|r| Resource {
                account_id: Some(ctx.api.opts.account.clone()),
                resource_type: "AWS::DynamoDB::Table".into(),
                arn: Some(r.clone()),
                arn_prefix: None,
            })
            .collect(),
    )
    .filter(|r: &Vec<Resource>| !r.is_empty());

    let action = format!("dynamodb:{name}");
    for r in &resources {
        ctx.authorize(&action, r)?;
    }

    if let Op::DescribeEndpoints(_) = op {
        // The endpoint clients should use is cairn itself, never the upstream behind it.
        let address = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        let mut r = json::reply(&serde_json::json!({
            "Endpoints": [{ "Address": address, "CachePeriodInMinutes": 1440 }]
        }));
        r.headers = vec![
            ("content-type".into(), crate::protocol::AMZ_JSON_1_0.into()),
            ("x-amz-crc32".into(), crc32fast::hash(&r.body).to_string()),
        ];
        return Ok(r);
    }

    // ARN members in the upstream's form (learned from its table descriptions: one
    // DescribeTable of the named table when not known yet).
    if !arn_members.is_empty() {
        let mut prefix = upstream_prefix(&state, target);
        if prefix.is_none() {
            let table = arn_members
                .iter()
                .filter_map(|m| body.get(*m).and_then(Value::as_str))
                .find_map(|a| a.split_once(":table/").map(|(_, r)| r.to_string()))
                .map(|r| r.split('/').next().unwrap_or_default().to_string());
            if let Some(t) = table {
                let _ = super::schema::of(&state, target, &t).await;
                prefix = upstream_prefix(&state, target);
            }
        }
        if let Some(up) = prefix {
            let ours = cairn_prefix(ctx);
            for m in &arn_members {
                if let Some(Value::String(a)) = body.get_mut(*m) {
                    if let Some(rest) = a.strip_prefix(&ours) {
                        *a = format!("{up}{rest}");
                    }
                }
            }
        }
    }
    if matches!(
        op,
        Op::CreateTable(_)
            | Op::DeleteTable(_)
            | Op::UpdateTable(_)
            | Op::RestoreTableFromBackup(_)
            | Op::RestoreTableToPointInTime(_)
            | Op::ImportTable(_)
    ) {
        for t in &tables {
            state.forget_schema(t);
        }
    }
    super::forward(ctx, target, name, &body, read_only, Answer::MapArns).await
}

/// `arn:aws:dynamodb:<region>:<account>:` of cairn's ARNs in this request's region.
pub fn cairn_prefix(ctx: &Ctx<'_>) -> String {
    format!("arn:aws:dynamodb:{}:{}:", ctx.region, ctx.api.opts.account)
}

/// The upstream's ARN prefix: configured, or learned.
pub fn upstream_prefix(state: &super::State, target: &Target) -> Option<String> {
    target
        .account
        .as_ref()
        .map(|a| format!("arn:aws:dynamodb:{}:{a}:", target.signing_region))
        .or_else(|| state.upstream_arn_prefix())
}
