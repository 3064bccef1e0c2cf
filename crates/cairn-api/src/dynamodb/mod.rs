//! DynamoDB, awsJson 1.0 (`DynamoDB_20120810.*`): an auditing endpoint in front of a
//! DynamoDB-compatible database (DynamoDB Local, ScyllaDB Alternator, AWS DynamoDB, dynalite).
//! cairn is not the database. It verifies the caller's SigV4, authorizes the call
//! (`dynamodb:<Action>` on the table's ARN, with `dynamodb:LeadingKeys`,
//! `dynamodb:Attributes`, … as condition keys), records it, re-signs it with the upstream's
//! credentials and forwards it; the upstream's answer, errors included, comes back as sent.
//!
//! - Control-plane calls (`tables`) are management events; item calls (`items`, PartiQL in
//!   `partiql`) are data events whose records keep key values and attribute names, never item
//!   values, expression values or statement parameters (`records`).
//! - A write is journaled (pending) before it is forwarded and completed with its outcome; a
//!   read is recorded once its answer is known, before it is returned (the edge's effect and
//!   record paths).
//! - `upstream`: the target, the signed request, one exchange; `schema`: key schemas read
//!   from the upstream; `expr`: the expression language as far as authorization needs it.

mod expr;
mod items;
pub mod partiql;
mod records;
mod schema;
mod tables;
pub mod upstream;

pub use upstream::Target;

use crate::edge::{Ctx, HttpRequest};
use crate::protocol::{json, ApiError, Protocol, Reply};
use crate::service::{BoxFuture, Service};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The prefix of DynamoDB's `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "DynamoDB_20120810.";

/// The DynamoDB service (signing name `dynamodb`).
pub struct DynamoDb;

/// What the service keeps between requests: the upstream client, the upstream's ARN prefix
/// once known, and key schemas.
#[derive(Default)]
pub struct State {
    client: std::sync::OnceLock<upstream::HttpClient>,
    upstream_prefix: std::sync::RwLock<Option<String>>,
    #[allow(clippy::type_complexity)]
    schemas: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (
                std::time::Instant,
                Option<std::sync::Arc<schema::KeySchema>>,
            ),
        >,
    >,
}

impl State {
    /// `arn:aws:dynamodb:<region>:<account>:` of the upstream's own ARNs, once known.
    pub fn upstream_arn_prefix(&self) -> Option<String> {
        self.upstream_prefix
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_upstream_arn_prefix(&self, p: String) {
        *self
            .upstream_prefix
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(p);
    }
}

/// A table named by its name.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableRef {
    pub table_name: String,
    #[serde(default)]
    pub index_name: Option<String>,
}

/// A call naming a resource by ARN.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceArn {
    pub resource_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BackupArn {
    pub backup_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestoreBackup {
    pub target_table_name: String,
    pub backup_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestorePitr {
    pub target_table_name: String,
    #[serde(default)]
    pub source_table_arn: Option<String>,
    #[serde(default)]
    pub source_table_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableArnRef {
    pub table_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExportArn {
    pub export_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportArn {
    pub import_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportTable {
    pub table_creation_parameters: TableRef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GlobalTable {
    pub global_table_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BulkArn {
    pub bulk_operation_arn: String,
}

/// A listing of the account's resources, optionally of one table.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Listing {
    #[serde(default)]
    pub table_name: Option<String>,
    #[serde(default)]
    pub table_arn: Option<String>,
}

/// The tables of a BatchGetItem or BatchWriteItem (`RequestItems`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Batch {
    pub request_items: Map<String, Value>,
}

/// The entries of a transaction (`TransactItems`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transact {
    pub transact_items: Vec<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatementText {
    pub statement: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statements {
    pub statements: Vec<StatementText>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransactStatements {
    pub transact_statements: Vec<StatementText>,
}

crate::operations! {
    /// A DynamoDB operation with the inputs cairn reads (the rest of the body is forwarded).
    pub enum DynamoOp {
        // Tables
        CreateTable(TableRef),
        DeleteTable(TableRef),
        DescribeTable(TableRef),
        UpdateTable(TableRef),
        ListTables(Listing),
        DescribeTimeToLive(TableRef),
        UpdateTimeToLive(TableRef),
        DescribeContinuousBackups(TableRef),
        UpdateContinuousBackups(TableRef),
        DescribeContributorInsights(TableRef),
        UpdateContributorInsights(TableRef),
        ListContributorInsights(Listing),
        DescribeKinesisStreamingDestination(TableRef),
        EnableKinesisStreamingDestination(TableRef),
        DisableKinesisStreamingDestination(TableRef),
        UpdateKinesisStreamingDestination(TableRef),
        DescribeTableReplicaAutoScaling(TableRef),
        UpdateTableReplicaAutoScaling(TableRef),
        DescribeLimits(Listing),
        DescribeEndpoints(Listing),
        // Tags and resource policies
        TagResource(ResourceArn),
        UntagResource(ResourceArn),
        ListTagsOfResource(ResourceArn),
        GetResourcePolicy(ResourceArn),
        PutResourcePolicy(ResourceArn),
        DeleteResourcePolicy(ResourceArn),
        // Backups, restores, exports, imports, bulk operations
        CreateBackup(TableRef),
        DeleteBackup(BackupArn),
        DescribeBackup(BackupArn),
        ListBackups(Listing),
        RestoreTableFromBackup(RestoreBackup),
        RestoreTableToPointInTime(RestorePitr),
        ExportTableToPointInTime(TableArnRef),
        DescribeExport(ExportArn),
        ListExports(Listing),
        ImportTable(ImportTable),
        DescribeImport(ImportArn),
        ListImports(Listing),
        StartBulkPutItems(TableRef),
        DescribeBulkOperation(BulkArn),
        CancelBulkOperation(BulkArn),
        ListBulkOperations(Listing),
        // Global tables (version 2017.11.29)
        CreateGlobalTable(GlobalTable),
        DescribeGlobalTable(GlobalTable),
        DescribeGlobalTableSettings(GlobalTable),
        UpdateGlobalTable(GlobalTable),
        UpdateGlobalTableSettings(GlobalTable),
        ListGlobalTables(Listing),
        // Items
        GetItem(TableRef),
        PutItem(TableRef),
        UpdateItem(TableRef),
        DeleteItem(TableRef),
        Query(TableRef),
        Scan(TableRef),
        SearchVectors(TableRef),
        BatchGetItem(Batch),
        BatchWriteItem(Batch),
        TransactGetItems(Transact),
        TransactWriteItems(Transact),
        ExecuteStatement(StatementText),
        BatchExecuteStatement(Statements),
        ExecuteTransaction(TransactStatements),
    }
}

impl DynamoOp {
    /// Whether operation `name` can change anything (a PartiQL call may: which one it is
    /// depends on its statements, so all three count).
    pub fn mutates(name: &str) -> bool {
        !(["Describe", "List", "Get"]
            .iter()
            .any(|p| name.starts_with(p))
            || matches!(
                name,
                "Query" | "Scan" | "SearchVectors" | "BatchGetItem" | "TransactGetItems"
            ))
    }

    /// Whether the operation is an item call (a data event).
    pub fn is_item_call(name: &str) -> bool {
        matches!(
            name,
            "GetItem"
                | "PutItem"
                | "UpdateItem"
                | "DeleteItem"
                | "Query"
                | "Scan"
                | "SearchVectors"
                | "BatchGetItem"
                | "BatchWriteItem"
                | "TransactGetItems"
                | "TransactWriteItems"
                | "ExecuteStatement"
                | "BatchExecuteStatement"
                | "ExecuteTransaction"
        )
    }
}

/// A routed call: the operation, the body to forward (what cairn parsed and authorized), and
/// what of the request the forwarding keeps.
pub struct Call {
    pub op: DynamoOp,
    pub body: Map<String, Value>,
    /// The `Host` the client used (DescribeEndpoints names cairn, never the upstream).
    pub host: String,
}

fn not_configured() -> ApiError {
    ApiError::new(
        "NotImplemented",
        501,
        "cairn has no DynamoDB upstream configured, so it cannot serve DynamoDB calls. Set \
         `[dynamodb] upstream = \"http://host:port\"` in cairn.toml or pass \
         `--dynamodb-upstream http://host:port` (any DynamoDB-compatible endpoint: DynamoDB \
         Local, ScyllaDB Alternator, dynalite, AWS DynamoDB).",
    )
}

/// A member of the wrong type or a missing required member.
fn invalid_input(e: ApiError) -> ApiError {
    let m = e
        .message
        .trim_start_matches("Invalid request: ")
        .to_string();
    if m.starts_with("missing field") {
        ApiError::client("ValidationException", m)
    } else {
        ApiError::serialization(m)
    }
}

/// Refuses a request whose members (at the top, in transaction entries and their
/// operations) include two names equal but for case (`TableName` and `tableName`): cairn
/// reads the exact name, and an upstream that matched names loosely could read the other.
/// (Item attribute names, which are case-sensitive data, are not checked.)
fn refuse_case_twins(body: &Map<String, Value>) -> Result<(), ApiError> {
    fn twins(m: &Map<String, Value>) -> bool {
        let mut seen: Vec<String> = Vec::with_capacity(m.len());
        for k in m.keys() {
            let l = k.to_ascii_lowercase();
            if seen.contains(&l) {
                return true;
            }
            seen.push(l);
        }
        false
    }
    let mut objects: Vec<&Map<String, Value>> = vec![body];
    for list in ["TransactItems", "Statements", "TransactStatements"] {
        for e in body
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(e) = e.as_object() {
                objects.push(e);
                objects.extend(e.values().filter_map(Value::as_object));
            }
        }
    }
    if let Some(Value::Object(p)) = body.get("TableCreationParameters") {
        objects.push(p);
    }
    if objects.into_iter().any(twins) {
        return Err(ApiError::serialization(
            "The request has two members whose names differ only in case",
        ));
    }
    Ok(())
}

/// Reads a request into its call.
pub fn route(api: &crate::Api, req: &HttpRequest) -> Result<Call, ApiError> {
    json::check_content_type(req)?;
    let name = json::target_op(req, &[TARGET_PREFIX]).unwrap_or_default();
    if api.opts.dynamodb.is_none() {
        return Err(not_configured());
    }
    let body = json::object(&req.body)?;
    refuse_case_twins(&body)?;
    macro_rules! i {
        () => {
            json::input(&body).map_err(invalid_input)?
        };
    }
    use DynamoOp as Op;
    let op = match name {
        "CreateTable" => Op::CreateTable(i!()),
        "DeleteTable" => Op::DeleteTable(i!()),
        "DescribeTable" => Op::DescribeTable(i!()),
        "UpdateTable" => Op::UpdateTable(i!()),
        "ListTables" => Op::ListTables(Listing::default()),
        "DescribeTimeToLive" => Op::DescribeTimeToLive(i!()),
        "UpdateTimeToLive" => Op::UpdateTimeToLive(i!()),
        "DescribeContinuousBackups" => Op::DescribeContinuousBackups(i!()),
        "UpdateContinuousBackups" => Op::UpdateContinuousBackups(i!()),
        "DescribeContributorInsights" => Op::DescribeContributorInsights(i!()),
        "UpdateContributorInsights" => Op::UpdateContributorInsights(i!()),
        "ListContributorInsights" => Op::ListContributorInsights(i!()),
        "DescribeKinesisStreamingDestination" => Op::DescribeKinesisStreamingDestination(i!()),
        "EnableKinesisStreamingDestination" => Op::EnableKinesisStreamingDestination(i!()),
        "DisableKinesisStreamingDestination" => Op::DisableKinesisStreamingDestination(i!()),
        "UpdateKinesisStreamingDestination" => Op::UpdateKinesisStreamingDestination(i!()),
        "DescribeTableReplicaAutoScaling" => Op::DescribeTableReplicaAutoScaling(i!()),
        "UpdateTableReplicaAutoScaling" => Op::UpdateTableReplicaAutoScaling(i!()),
        "DescribeLimits" => Op::DescribeLimits(Listing::default()),
        "DescribeEndpoints" => Op::DescribeEndpoints(Listing::default()),
        "TagResource" => Op::TagResource(i!()),
        "UntagResource" => Op::UntagResource(i!()),
        "ListTagsOfResource" => Op::ListTagsOfResource(i!()),
        "GetResourcePolicy" => Op::GetResourcePolicy(i!()),
        "PutResourcePolicy" => Op::PutResourcePolicy(i!()),
        "DeleteResourcePolicy" => Op::DeleteResourcePolicy(i!()),
        "CreateBackup" => Op::CreateBackup(i!()),
        "DeleteBackup" => Op::DeleteBackup(i!()),
        "DescribeBackup" => Op::DescribeBackup(i!()),
        "ListBackups" => Op::ListBackups(i!()),
        "RestoreTableFromBackup" => Op::RestoreTableFromBackup(i!()),
        "RestoreTableToPointInTime" => Op::RestoreTableToPointInTime(i!()),
        "ExportTableToPointInTime" => Op::ExportTableToPointInTime(i!()),
        "DescribeExport" => Op::DescribeExport(i!()),
        "ListExports" => Op::ListExports(i!()),
        "ImportTable" => Op::ImportTable(i!()),
        "DescribeImport" => Op::DescribeImport(i!()),
        "ListImports" => Op::ListImports(i!()),
        "StartBulkPutItems" => Op::StartBulkPutItems(i!()),
        "DescribeBulkOperation" => Op::DescribeBulkOperation(i!()),
        "CancelBulkOperation" => Op::CancelBulkOperation(i!()),
        "ListBulkOperations" => Op::ListBulkOperations(Listing::default()),
        "CreateGlobalTable" => Op::CreateGlobalTable(i!()),
        "DescribeGlobalTable" => Op::DescribeGlobalTable(i!()),
        "DescribeGlobalTableSettings" => Op::DescribeGlobalTableSettings(i!()),
        "UpdateGlobalTable" => Op::UpdateGlobalTable(i!()),
        "UpdateGlobalTableSettings" => Op::UpdateGlobalTableSettings(i!()),
        "ListGlobalTables" => Op::ListGlobalTables(Listing::default()),
        "GetItem" => Op::GetItem(i!()),
        "PutItem" => Op::PutItem(i!()),
        "UpdateItem" => Op::UpdateItem(i!()),
        "DeleteItem" => Op::DeleteItem(i!()),
        "Query" => Op::Query(i!()),
        "Scan" => Op::Scan(i!()),
        "SearchVectors" => Op::SearchVectors(i!()),
        "BatchGetItem" => Op::BatchGetItem(i!()),
        "BatchWriteItem" => Op::BatchWriteItem(i!()),
        "TransactGetItems" => Op::TransactGetItems(i!()),
        "TransactWriteItems" => Op::TransactWriteItems(i!()),
        "ExecuteStatement" => Op::ExecuteStatement(i!()),
        "BatchExecuteStatement" => Op::BatchExecuteStatement(i!()),
        "ExecuteTransaction" => Op::ExecuteTransaction(i!()),
        op => {
            // An operation cairn cannot authorize is never forwarded.
            return Err(ApiError::client(
                "UnknownOperationException",
                format!("cairn does not know the DynamoDB operation {op}"),
            ));
        }
    };
    Ok(Call {
        op,
        body,
        host: req.header("host").unwrap_or_default().to_string(),
    })
}

impl Service for DynamoDb {
    type Op = Call;

    fn signing_name(&self) -> &'static str {
        "dynamodb"
    }
    fn event_source(&self) -> &'static str {
        "dynamodb.amazonaws.com"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json10
    }
    fn claims(&self, req: &HttpRequest) -> bool {
        json::target_op(req, &[TARGET_PREFIX]).is_some()
    }
    fn operation_name(&self, req: &HttpRequest) -> Result<String, ApiError> {
        json::target_name(req, &[TARGET_PREFIX])
    }
    fn operations(&self) -> &'static [&'static str] {
        DynamoOp::NAMES
    }
    fn mutates(&self, name: &str) -> bool {
        DynamoOp::mutates(name)
    }
    fn route(&self, api: &crate::Api, req: &HttpRequest) -> Result<Self::Op, ApiError> {
        route(api, req)
    }
    fn audit_unrouted(&self, ctx: &mut Ctx<'_>, req: &HttpRequest, name: &str) {
        // A call whose inputs do not parse is recorded by name; an item call keeps nothing
        // of its body (which may hold item values), a control-plane call its parameters.
        ctx.audit.read_only = !DynamoOp::mutates(name);
        ctx.audit.api_version = Some("2012-08-10");
        if !DynamoOp::NAMES.contains(&name) {
            // An operation cairn does not know may carry item values: nothing of it is kept.
            return;
        }
        if DynamoOp::is_item_call(name) {
            let table = json::object(&req.body)
                .ok()
                .and_then(|b| {
                    b.get("TableName")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .filter(|t| items::valid_name(t));
            let mut p = Map::new();
            if let Some(t) = &table {
                p.insert("tableName".into(), Value::String(t.clone()));
            }
            let tables: Vec<String> = table.into_iter().collect();
            ctx.audit.data_event = Some(items::data_event(
                ctx,
                name,
                &tables,
                Value::Object(p),
                !DynamoOp::mutates(name),
            ));
        } else {
            ctx.audit.request_parameters = json::object(&req.body)
                .ok()
                .filter(|b| !b.is_empty())
                .map(|b| records::lower_camel_deep(&Value::Object(b)));
        }
    }
    fn handle<'a>(
        &'a self,
        ctx: &'a mut Ctx<'_>,
        call: Call,
    ) -> BoxFuture<'a, Result<Reply, ApiError>> {
        Box::pin(async move {
            let Some(target) = ctx.api.opts.dynamodb.clone() else {
                return Err(not_configured());
            };
            if ctx.region != target.region {
                return Err(ApiError::client(
                    "UnrecognizedClientException",
                    format!(
                        "cairn serves DynamoDB in {} only (its [dynamodb] region); this request is signed for {}",
                        target.region, ctx.region
                    ),
                ));
            }
            if DynamoOp::is_item_call(call.op.name()) {
                items::handle(ctx, &target, call).await
            } else {
                tables::handle(ctx, &target, call).await
            }
        })
    }
}

/// Sends the call upstream: a read now (its answer is recorded before it is returned), a
/// write as the request's effect (journaled as pending first; its outcome completes the
/// record).
async fn forward(
    ctx: &mut Ctx<'_>,
    target: &Target,
    name: &str,
    body: &Map<String, Value>,
    read_only: bool,
    answer: upstream::Answer,
) -> Result<Reply, ApiError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::internal(format!("cannot serialize the forwarded call: {e}")))?;
    // The client's Accept-Encoding is not passed on: cairn reads control-plane answers and
    // errors (ARNs, error codes), which a compressed answer would hide.
    let request = upstream::request(target, name, bytes.into())?;
    let state = ctx.api.dynamodb.clone();
    let arns = (answer == upstream::Answer::MapArns).then(|| upstream::ArnMap {
        configured: tables::upstream_prefix(&state, target).filter(|_| target.account.is_some()),
        state: state.clone(),
        ours: tables::cairn_prefix(ctx),
    });
    let exchange = upstream::Exchange {
        client: upstream::client(&state, target)?,
        request,
        answer,
        timeout: target.timeout,
        arns,
        keep_response: !read_only && answer == upstream::Answer::MapArns,
    };
    if read_only {
        let out = exchange.run().await;
        ctx.audit.error = out.error;
        return out.reply;
    }
    ctx.defer_effect(Box::new(move || Box::pin(exchange.run())));
    Ok(Reply {
        status: 200,
        headers: Vec::new(),
        body: bytes::Bytes::new(),
        stream: None,
    })
}
