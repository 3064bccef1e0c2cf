//! Item calls, the data events: GetItem, PutItem, UpdateItem, DeleteItem, Query, Scan,
//! SearchVectors, the batch and transaction calls, and PartiQL. Each table (or index) a call
//! touches is authorized with the action AWS checks for it (a transaction's Put needs
//! `dynamodb:PutItem`, a statement `dynamodb:PartiQL<Verb>`) and the condition keys of its
//! entries: `dynamodb:LeadingKeys` (partition key values; without the table's key schema,
//! every scalar value of the key or item, so a policy restricting them can only refuse
//! more), `dynamodb:Attributes`, `dynamodb:Select`, `dynamodb:ReturnValues`,
//! `dynamodb:ReturnConsumedCapacity`.

use super::expr::{self, scalar};
use super::partiql::{self, Statement};
use super::records;
use super::schema::{self, KeySchema};
use super::upstream::{Answer, Target};
use super::{Call, DynamoOp};
use crate::edge::Ctx;
use crate::protocol::{ApiError, Reply};
use cairn_record::{builder, EventRecord, Resource};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// DynamoDB's table and index names: 3–255 of `[a-zA-Z0-9_.-]`.
pub fn valid_name(s: &str) -> bool {
    (3..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn bad_name(member: &str, v: &str) -> ApiError {
    let shown: String = v.chars().take(255).collect();
    ApiError::client(
        "ValidationException",
        format!(
            "1 validation error detected: Value '{shown}' at '{member}' failed to satisfy constraint: Member must have length between 3 and 255 and satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        ),
    )
}

/// An ARN a caller gives: it must be one of cairn's own DynamoDB resources (this account,
/// this region); returns its resource part (`table/Music`, `table/Music/backup/…`).
pub fn own_resource(ctx: &Ctx<'_>, arn: &str, member: &str) -> Result<String, ApiError> {
    let parsed: cairn_record::Arn = arn.parse().map_err(|_| {
        ApiError::client(
            "ValidationException",
            format!("Invalid {member} provided as input: {arn}"),
        )
    })?;
    let global = parsed.resource.starts_with("global-table/");
    if parsed.partition != cairn_record::arn::PARTITION
        || parsed.service != "dynamodb"
        || parsed.account != ctx.api.opts.account
        || (!global && parsed.region != ctx.region)
    {
        return Err(ApiError::client(
            "ValidationException",
            format!(
                "{member} {arn} is not a DynamoDB resource of account {} in {}",
                ctx.api.opts.account, ctx.region
            ),
        ));
    }
    // Every name in the path is a DynamoDB name (no `/` tricks inside a segment).
    let mut segs = parsed.resource.split('/');
    let kind = segs.next().unwrap_or_default();
    let name = segs.next().unwrap_or_default();
    if !matches!(kind, "table" | "global-table") || !valid_name(name) {
        return Err(bad_name(member, &parsed.resource));
    }
    Ok(parsed.resource)
}

/// A `TableName` member: a name, or (as DynamoDB now accepts) a table's ARN; the name.
pub fn table_name(ctx: &Ctx<'_>, v: &str, member: &str) -> Result<String, ApiError> {
    if v.starts_with("arn:") {
        let r = own_resource(ctx, v, member)?;
        return match r.strip_prefix("table/") {
            Some(n) if !n.contains('/') => Ok(n.to_string()),
            _ => Err(bad_name(member, v)),
        };
    }
    if !valid_name(v) {
        return Err(bad_name(member, v));
    }
    Ok(v.to_string())
}

/// `arn:aws:dynamodb:<region>:<account>:<resource>`.
pub fn arn(ctx: &Ctx<'_>, resource: &str) -> String {
    format!(
        "arn:aws:dynamodb:{}:{}:{resource}",
        ctx.region, ctx.api.opts.account
    )
}

/// The data event of an item call on `tables` (every table listed in `resources`).
pub fn data_event(
    ctx: &Ctx<'_>,
    name: &str,
    tables: &[String],
    params: Value,
    read_only: bool,
) -> EventRecord {
    let account = &ctx.api.opts.account;
    let first = tables.first().map(String::as_str).unwrap_or_default();
    let mut r = builder::dynamodb(
        name,
        &ctx.region,
        ctx.now,
        ctx.caller.identity.clone(),
        account,
        first,
        params,
    );
    r.read_only = Some(read_only);
    let mut seen: Vec<&String> = Vec::new();
    let resources: Vec<Resource> = tables
        .iter()
        .filter(|t| {
            let new = !seen.contains(t);
            seen.push(t);
            new
        })
        .map(|t| Resource {
            account_id: Some(account.clone()),
            resource_type: "AWS::DynamoDB::Table".into(),
            arn: Some(arn(ctx, &format!("table/{t}"))),
            arn_prefix: None,
        })
        .collect();
    r.resources = (!resources.is_empty()).then_some(resources);
    r
}

async fn schema_of(
    ctx: &Ctx<'_>,
    target: &Target,
    table: &str,
) -> Result<Option<Arc<KeySchema>>, ApiError> {
    Ok(schema::of(&ctx.api.dynamodb, target, table).await?.schema())
}

/// Makes `name` on its one table the request's data event, its key attributes named by
/// `schema`.
fn record_item_call(
    ctx: &mut Ctx<'_>,
    name: &str,
    table: &String,
    body: &Map<String, Value>,
    schema: Option<&KeySchema>,
    read_only: bool,
) {
    let params = records::item_call(name, table, body, schema);
    let tables = std::slice::from_ref(table);
    ctx.audit.data_event = Some(data_event(ctx, name, tables, params, read_only));
}

fn obj<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Map<String, Value>> {
    m.get(k).and_then(Value::as_object)
}

fn string<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// The condition keys of one table's share of a call, accumulated over its entries.
#[derive(Default)]
struct Keys {
    leading: Vec<String>,
    attributes: Vec<String>,
    /// Some entry names every attribute (no projection): `dynamodb:Attributes` would not
    /// bound what it reads, `dynamodb:Select` says so.
    all_attributes: bool,
    select: Option<String>,
    return_values: Option<String>,
}

impl Keys {
    fn add_attrs(&mut self, names: impl IntoIterator<Item = String>) {
        for n in names {
            if !self.attributes.contains(&n) {
                self.attributes.push(n);
            }
        }
    }

    /// The partition values of `attrs` (a key or an item).
    fn add_leading(&mut self, attrs: Option<&Value>, schema: Option<&KeySchema>) {
        let Some(m) = attrs.and_then(Value::as_object) else {
            return;
        };
        match schema {
            Some(s) => {
                if let Some(v) = m.get(&s.hash).and_then(scalar) {
                    self.leading.push(v);
                }
            }
            // Unknown schema: every value, so a restriction can only refuse more.
            None => self.leading.extend(m.values().filter_map(scalar)),
        }
    }

    /// What an entry reads, from its projection.
    fn add_projection(&mut self, entry: &Map<String, Value>) {
        let names = obj(entry, "ExpressionAttributeNames");
        if let Some(p) = string(entry, "ProjectionExpression") {
            self.add_attrs(expr::attributes(p, names));
        } else if let Some(a) = entry.get("AttributesToGet").and_then(Value::as_array) {
            self.add_attrs(a.iter().filter_map(Value::as_str).map(str::to_string));
        } else {
            self.all_attributes = true;
        }
    }

    /// The attributes legacy conditions and filters name (`Expected`, `QueryFilter`,
    /// `ScanFilter`).
    fn add_legacy(&mut self, entry: &Map<String, Value>) {
        for m in ["Expected", "QueryFilter", "ScanFilter"] {
            if let Some(c) = obj(entry, m) {
                self.add_attrs(c.keys().cloned());
            }
        }
    }

    /// The attributes an expression member names.
    fn add_expression(&mut self, entry: &Map<String, Value>, member: &str) {
        if let Some(e) = string(entry, member) {
            self.add_attrs(expr::attributes(e, obj(entry, "ExpressionAttributeNames")));
        }
    }

    fn key_names(&mut self, key: Option<&Value>) {
        if let Some(m) = key.and_then(Value::as_object) {
            self.add_attrs(m.keys().cloned());
        }
    }

    /// Sets the condition keys for the table's authorization (the keys are used up: each
    /// table's share is authorized once).
    fn apply(self, ctx: &mut Ctx<'_>, body: &Map<String, Value>) {
        ctx.keys.remove_prefix("dynamodb:");
        if !self.leading.is_empty() {
            ctx.keys.set_many("dynamodb:LeadingKeys", self.leading);
        }
        if !self.attributes.is_empty() {
            ctx.keys.set_many("dynamodb:Attributes", self.attributes);
        }
        let select = self.select.unwrap_or_else(|| {
            if self.all_attributes {
                "ALL_ATTRIBUTES".into()
            } else {
                "SPECIFIC_ATTRIBUTES".into()
            }
        });
        ctx.keys.set("dynamodb:Select", select);
        if let Some(r) = self.return_values {
            ctx.keys.set("dynamodb:ReturnValues", r);
        }
        ctx.keys.set(
            "dynamodb:ReturnConsumedCapacity",
            string(body, "ReturnConsumedCapacity").unwrap_or("NONE"),
        );
    }
}

/// Runs an item call.
pub async fn handle(ctx: &mut Ctx<'_>, target: &Target, call: Call) -> Result<Reply, ApiError> {
    let Call { op, mut body, .. } = call;
    let name = op.name();
    let decided = match op {
        DynamoOp::BatchGetItem(_) => batch_get(ctx, target, &mut body).await,
        DynamoOp::BatchWriteItem(_) => batch_write(ctx, target, &mut body).await,
        DynamoOp::TransactGetItems(_) | DynamoOp::TransactWriteItems(_) => {
            transact(ctx, target, name, &mut body).await
        }
        DynamoOp::ExecuteStatement(_)
        | DynamoOp::BatchExecuteStatement(_)
        | DynamoOp::ExecuteTransaction(_) => statements(ctx, target, name, &body).await,
        _ => single(ctx, target, name, &mut body).await,
    };
    // Recorded as a data event even if it was refused before its tables were known (built
    // only then: a call that names its tables has its event already).
    if ctx.audit.data_event.is_none() {
        let read_only = !DynamoOp::mutates(name);
        ctx.audit.data_event = Some(data_event(ctx, name, &[], json!({}), read_only));
    }
    let read_only = decided?;
    super::forward(ctx, target, name, &body, read_only, Answer::Stream).await
}

/// GetItem, PutItem, UpdateItem, DeleteItem, Query, Scan, SearchVectors.
async fn single(
    ctx: &mut Ctx<'_>,
    target: &Target,
    name: &str,
    body: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    let given = string(body, "TableName").unwrap_or_default().to_string();
    let table = table_name(ctx, &given, "tableName")?;
    body.insert("TableName".into(), Value::String(table.clone()));
    let index = match string(body, "IndexName") {
        Some(i) if !valid_name(i) => return Err(bad_name("indexName", i)),
        i => i.map(str::to_string),
    };
    let read_only = !DynamoOp::mutates(name);
    let schema = match schema::cached(&ctx.api.dynamodb, &table) {
        Some(known) => known.schema(),
        None => {
            // Recorded on its table even if its schema cannot be read (the upstream is down).
            record_item_call(ctx, name, &table, body, None, read_only);
            schema_of(ctx, target, &table).await?
        }
    };
    let s = schema.as_deref();
    record_item_call(ctx, name, &table, body, s, read_only);

    let mut k = Keys::default();
    match name {
        "GetItem" => {
            k.add_leading(body.get("Key"), s);
            k.key_names(body.get("Key"));
            k.add_projection(body);
        }
        "PutItem" => {
            k.add_leading(body.get("Item"), s);
            k.key_names(body.get("Item"));
            k.add_expression(body, "ConditionExpression");
        }
        "UpdateItem" => {
            k.add_leading(body.get("Key"), s);
            k.key_names(body.get("Key"));
            k.add_expression(body, "UpdateExpression");
            k.add_expression(body, "ConditionExpression");
            if let Some(u) = obj(body, "AttributeUpdates") {
                k.add_attrs(u.keys().cloned());
            }
        }
        "DeleteItem" => {
            k.add_leading(body.get("Key"), s);
            k.key_names(body.get("Key"));
            k.add_expression(body, "ConditionExpression");
        }
        "Query" => {
            let names = obj(body, "ExpressionAttributeNames");
            let values = obj(body, "ExpressionAttributeValues");
            let hash = s.and_then(|s| s.partition_key(index.as_deref()));
            let mut found: Vec<String> = match (hash, string(body, "KeyConditionExpression")) {
                (Some(h), Some(e)) => expr::equality_values(e, names, values, h)
                    .into_iter()
                    .filter_map(scalar)
                    .collect(),
                _ => Vec::new(),
            };
            if let (Some(h), Some(kc)) = (hash, obj(body, "KeyConditions")) {
                if let Some(c) = kc.get(h) {
                    found.extend(
                        c.get("AttributeValueList")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(scalar),
                    );
                }
            }
            if found.is_empty() {
                // Not understood: every value the query carries.
                found.extend(
                    values
                        .into_iter()
                        .flat_map(|v| v.values())
                        .filter_map(scalar),
                );
                if let Some(kc) = obj(body, "KeyConditions") {
                    for c in kc.values() {
                        found.extend(
                            c.get("AttributeValueList")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(scalar),
                        );
                    }
                }
            }
            k.leading = found;
            k.add_expression(body, "KeyConditionExpression");
            if let Some(kc) = obj(body, "KeyConditions") {
                k.add_attrs(kc.keys().cloned());
            }
            k.add_projection(body);
            k.add_expression(body, "FilterExpression");
        }
        _ => {
            // Scan, SearchVectors: no partition key to restrict (as on AWS).
            k.add_projection(body);
            k.add_expression(body, "FilterExpression");
        }
    }
    k.add_legacy(body);
    k.select = string(body, "Select").map(str::to_string);
    if !read_only {
        k.return_values = Some(string(body, "ReturnValues").unwrap_or("NONE").to_string());
    }
    k.apply(ctx, body);
    let resource = match &index {
        Some(i) if matches!(name, "Query" | "Scan" | "SearchVectors") => {
            format!("table/{table}/index/{i}")
        }
        _ => format!("table/{table}"),
    };
    let arn = arn(ctx, &resource);
    ctx.authorize(&format!("dynamodb:{name}"), &arn)?;
    Ok(read_only)
}

/// Renames a `RequestItems` map's tables to their names (a table may be given by ARN);
/// the same table twice is refused.
fn normalize_tables(
    ctx: &Ctx<'_>,
    items: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (t, v) in items {
        let name = table_name(ctx, t, "requestItems")?;
        if out.insert(name.clone(), v.clone()).is_some() {
            return Err(ApiError::client(
                "ValidationException",
                format!("Table {name} is named more than once in RequestItems"),
            ));
        }
    }
    Ok(out)
}

async fn batch_get(
    ctx: &mut Ctx<'_>,
    target: &Target,
    body: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    let items = normalize_tables(ctx, obj(body, "RequestItems").unwrap_or(&Map::new()))?;
    let keys: usize = items
        .values()
        .map(|v| v.get("Keys").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    if items.is_empty() || keys == 0 {
        return Err(ApiError::client(
            "ValidationException",
            "The requestItems parameter must name at least one table and key",
        ));
    }
    if keys > 100 {
        return Err(ApiError::client(
            "ValidationException",
            "Too many items requested for the BatchGetItem call",
        ));
    }
    body.insert("RequestItems".into(), Value::Object(items.clone()));
    let mut schemas = Vec::new();
    let mut logged = Map::new();
    for (t, v) in &items {
        let schema = schema_of(ctx, target, t).await?;
        let e = v.as_object().cloned().unwrap_or_default();
        let keys: Vec<Value> = e
            .get("Keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|k| records::key(Some(k), schema.as_deref()))
            .collect();
        let mut entry = records::entry("Get", t, &e, schema.as_deref());
        if let Some(m) = entry.as_object_mut() {
            m.remove("operation");
            m.remove("tableName");
            m.insert("keys".into(), Value::Array(keys));
        }
        logged.insert(t.clone(), entry);
        schemas.push((t.clone(), e, schema));
    }
    let mut params = json!({ "requestItems": logged });
    if let Some(m) = params.as_object_mut() {
        records::call_options(body, m);
    }
    let tables: Vec<String> = items.keys().cloned().collect();
    ctx.audit.data_event = Some(data_event(ctx, "BatchGetItem", &tables, params, true));
    for (t, e, schema) in schemas {
        let mut k = Keys::default();
        for key in e
            .get("Keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            k.add_leading(Some(key), schema.as_deref());
            k.key_names(Some(key));
        }
        k.add_projection(&e);
        k.apply(ctx, body);
        let arn = arn(ctx, &format!("table/{t}"));
        ctx.authorize("dynamodb:BatchGetItem", &arn)?;
    }
    Ok(true)
}

async fn batch_write(
    ctx: &mut Ctx<'_>,
    target: &Target,
    body: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    let items = normalize_tables(ctx, obj(body, "RequestItems").unwrap_or(&Map::new()))?;
    let writes: usize = items
        .values()
        .map(|v| v.as_array().map_or(0, Vec::len))
        .sum();
    if items.is_empty() || writes == 0 || writes > 25 {
        return Err(ApiError::client(
            "ValidationException",
            "BatchWriteItem takes between 1 and 25 write requests",
        ));
    }
    body.insert("RequestItems".into(), Value::Object(items.clone()));
    let mut per_table = Vec::new();
    let mut logged = Map::new();
    for (t, v) in &items {
        let schema = schema_of(ctx, target, t).await?;
        let s = schema.as_deref();
        let mut k = Keys::default();
        let mut entries = Vec::new();
        for w in v.as_array().into_iter().flatten() {
            let Some(w) = w.as_object() else { continue };
            let put = w.get("PutRequest").and_then(|p| p.get("Item"));
            let del = w.get("DeleteRequest").and_then(|d| d.get("Key"));
            if put.is_some() == del.is_some() {
                return Err(ApiError::client(
                    "ValidationException",
                    "Each write request must be exactly one of PutRequest and DeleteRequest",
                ));
            }
            if let Some(item) = put {
                k.add_leading(Some(item), s);
                k.key_names(Some(item));
                let mut e = Map::new();
                if let Some(key) = s.and_then(|s| records::key(Some(item), Some(s))) {
                    e.insert("key".into(), key);
                }
                e.insert(
                    "item".into(),
                    records::names(Some(item)).unwrap_or(Value::Null),
                );
                entries.push(json!({ "putRequest": e }));
            } else if let Some(key) = del {
                k.add_leading(Some(key), s);
                k.key_names(Some(key));
                entries.push(json!({ "deleteRequest": { "key": records::key(Some(key), s) } }));
            }
        }
        k.return_values = Some("NONE".into());
        logged.insert(t.clone(), Value::Array(entries));
        per_table.push((t.clone(), k));
    }
    let mut params = json!({ "requestItems": logged });
    if let Some(m) = params.as_object_mut() {
        records::call_options(body, m);
    }
    let tables: Vec<String> = items.keys().cloned().collect();
    ctx.audit.data_event = Some(data_event(ctx, "BatchWriteItem", &tables, params, false));
    for (t, k) in per_table {
        k.apply(ctx, body);
        let arn = arn(ctx, &format!("table/{t}"));
        ctx.authorize("dynamodb:BatchWriteItem", &arn)?;
    }
    Ok(false)
}

/// TransactGetItems and TransactWriteItems: each entry authorized as the single call it is.
async fn transact(
    ctx: &mut Ctx<'_>,
    target: &Target,
    name: &str,
    body: &mut Map<String, Value>,
) -> Result<bool, ApiError> {
    let read = name == "TransactGetItems";
    let kinds: &[(&str, &str)] = if read {
        &[("Get", "dynamodb:GetItem")]
    } else {
        &[
            ("Put", "dynamodb:PutItem"),
            ("Update", "dynamodb:UpdateItem"),
            ("Delete", "dynamodb:DeleteItem"),
            ("ConditionCheck", "dynamodb:ConditionCheckItem"),
        ]
    };
    let entries: Vec<Value> = body
        .get("TransactItems")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() || entries.len() > 100 {
        return Err(ApiError::client(
            "ValidationException",
            format!("{name} takes between 1 and 100 items"),
        ));
    }
    let mut rewritten = Vec::new();
    let mut logged = Vec::new();
    let mut checks = Vec::new();
    let mut tables = Vec::new();
    for e in entries {
        let e = e.as_object().cloned().unwrap_or_default();
        let present: Vec<&(&str, &str)> =
            kinds.iter().filter(|(k, _)| e.contains_key(*k)).collect();
        let [(kind, action)] = present.as_slice() else {
            return Err(ApiError::client(
                "ValidationException",
                format!(
                    "Each transaction item must name exactly one of {}",
                    kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if e.len() != 1 {
            return Err(ApiError::client(
                "ValidationException",
                "A transaction item has members other than its operation",
            ));
        }
        let mut inner = obj(&e, kind).cloned().unwrap_or_default();
        let given = string(&inner, "TableName").unwrap_or_default().to_string();
        let table = table_name(ctx, &given, "tableName")?;
        inner.insert("TableName".into(), Value::String(table.clone()));
        let schema = schema_of(ctx, target, &table).await?;
        let s = schema.as_deref();
        logged.push(records::entry(kind, &table, &inner, s));
        let mut k = Keys::default();
        let attrs = if *kind == "Put" { "Item" } else { "Key" };
        k.add_leading(inner.get(attrs), s);
        k.key_names(inner.get(attrs));
        match *kind {
            "Get" => k.add_projection(&inner),
            "Update" => k.add_expression(&inner, "UpdateExpression"),
            _ => {}
        }
        k.add_expression(&inner, "ConditionExpression");
        if !read {
            k.return_values = Some("NONE".into());
        }
        checks.push((table.clone(), *action, k));
        tables.push(table);
        let mut w = Map::new();
        w.insert(kind.to_string(), Value::Object(inner));
        rewritten.push(Value::Object(w));
    }
    body.insert("TransactItems".into(), Value::Array(rewritten));
    let mut params = json!({ "requestItems": logged });
    if let Some(m) = params.as_object_mut() {
        records::call_options(body, m);
    }
    ctx.audit.data_event = Some(data_event(ctx, name, &tables, params, read));
    for (table, action, k) in checks {
        k.apply(ctx, body);
        let arn = arn(ctx, &format!("table/{table}"));
        ctx.authorize(action, &arn)?;
    }
    Ok(read)
}

/// ExecuteStatement, BatchExecuteStatement, ExecuteTransaction.
async fn statements(
    ctx: &mut Ctx<'_>,
    target: &Target,
    name: &str,
    body: &Map<String, Value>,
) -> Result<bool, ApiError> {
    // Each statement with its parameters.
    let entries: Vec<(String, Vec<Value>)> = match name {
        "ExecuteStatement" => vec![(
            string(body, "Statement").unwrap_or_default().to_string(),
            body.get("Parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        )],
        member => body
            .get(if member == "BatchExecuteStatement" {
                "Statements"
            } else {
                "TransactStatements"
            })
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s.get("Statement")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    s.get("Parameters")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect(),
    };
    let max = if name == "BatchExecuteStatement" {
        25
    } else {
        100
    };
    if entries.is_empty() || entries.len() > max {
        return Err(ApiError::client(
            "ValidationException",
            format!("{name} takes between 1 and {max} statements"),
        ));
    }
    let texts: Vec<String> = entries.iter().map(|(t, _)| t.clone()).collect();
    let mut parsed: Vec<Statement> = Vec::new();
    for t in &texts {
        let s = partiql::parse(t)?;
        if !valid_name(&s.table) {
            return Err(bad_name("statement", &s.table));
        }
        if let Some(i) = &s.index {
            if !valid_name(i) {
                return Err(bad_name("statement", i));
            }
        }
        parsed.push(s);
    }
    let read_only = parsed.iter().all(|s| s.verb.reads());
    let mut redacted = Vec::new();
    for (s, t) in parsed.iter().zip(&texts) {
        let schema = schema_of(ctx, target, &s.table).await?;
        redacted.push(s.redacted(t, schema.as_deref()));
    }
    let mut p = Map::new();
    if name == "ExecuteStatement" {
        p.insert(
            "statement".into(),
            Value::String(redacted.first().cloned().unwrap_or_default()),
        );
        for k in [
            "ConsistentRead",
            "Limit",
            "ReturnConsumedCapacity",
            "ReturnValuesOnConditionCheckFailure",
        ] {
            if let Some(v) = body.get(k) {
                p.insert(crate::protocol::lower_first(k), v.clone());
            }
        }
    } else {
        p.insert(
            "requestItems".into(),
            Value::Array(
                redacted
                    .into_iter()
                    .map(|s| json!({ "statement": s }))
                    .collect(),
            ),
        );
        records::call_options(body, &mut p);
    }
    let tables: Vec<String> = parsed.iter().map(|s| s.table.clone()).collect();
    ctx.audit.data_event = Some(data_event(ctx, name, &tables, Value::Object(p), read_only));
    for ((s, text), (_, params)) in parsed.iter().zip(&texts).zip(&entries) {
        // LeadingKeys: every value the statement carries, literals and parameters (a
        // superset of its partition key values: a restriction can only refuse more).
        let mut k = Keys {
            leading: s.literals(text),
            ..Default::default()
        };
        k.leading.extend(params.iter().filter_map(scalar));
        match s.attributes(text) {
            Some(a) => k.add_attrs(a),
            None => k.all_attributes = true,
        }
        k.apply(ctx, body);
        let resource = match &s.index {
            Some(i) => format!("table/{}/index/{i}", s.table),
            None => format!("table/{}", s.table),
        };
        let arn = arn(ctx, &resource);
        ctx.authorize(s.verb.action(), &arn)?;
    }
    Ok(read_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dynamodb_rules() {
        assert!(valid_name("Music") && valid_name("a.b-c_1"));
        for bad in ["ab", "a/index/b", "tab le", "täble", &"x".repeat(256)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
