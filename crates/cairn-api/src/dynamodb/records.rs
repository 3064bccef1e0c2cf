//! What the record of a DynamoDB call keeps (spec §2.5): table names, primary-key values,
//! attribute *names*, expressions and expression attribute names, and the call's options.
//! Never an item's other values, an expression attribute value, or a PartiQL parameter. A
//! request's key is logged only as far as the table's key schema says it is the key (a
//! request that stuffs other attributes into `Key` does not get them into the trail).

use super::expr::scalar;
use super::schema::KeySchema;
use crate::protocol::lower_first;
use serde_json::{json, Map, Value};

/// `Value` with every object key in lowerCamelCase, at every depth (how CloudTrail writes a
/// control-plane call's parameters and answer).
pub fn lower_camel_deep(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (lower_first(k), lower_camel_deep(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(lower_camel_deep).collect()),
        v => v.clone(),
    }
}

/// The primary key of `attrs` (a request's `Key` or `Item`) as the record shows it: untyped
/// values of the table's key attributes only. Without the schema, a `Key`'s attribute names
/// with their values redacted.
pub fn key(attrs: Option<&Value>, schema: Option<&KeySchema>) -> Option<Value> {
    let m = attrs?.as_object()?;
    let mut out = Map::new();
    for (name, v) in m {
        match schema {
            Some(s) if s.is_key(name) => {
                out.insert(
                    name.clone(),
                    scalar(v).map(Value::String).unwrap_or(Value::Null),
                );
            }
            Some(_) => {}
            None => {
                out.insert(name.clone(), Value::String("***(Redacted)".into()));
            }
        }
    }
    Some(Value::Object(out))
}

/// The attribute names of an item.
pub fn names(item: Option<&Value>) -> Option<Value> {
    Some(Value::Array(
        item?
            .as_object()?
            .keys()
            .map(|k| Value::String(k.clone()))
            .collect(),
    ))
}

/// Members copied as they are (options and expressions, never values).
const OPTIONS: &[&str] = &[
    "IndexName",
    "ConsistentRead",
    "ProjectionExpression",
    "ExpressionAttributeNames",
    "AttributesToGet",
    "ConditionExpression",
    "UpdateExpression",
    "KeyConditionExpression",
    "FilterExpression",
    "ConditionalOperator",
    "ReturnValues",
    "ReturnConsumedCapacity",
    "ReturnItemCollectionMetrics",
    "ReturnValuesOnConditionCheckFailure",
    "Select",
    "Limit",
    "ScanIndexForward",
    "Segment",
    "TotalSegments",
    "ClientRequestToken",
    "TopK",
];

fn copy_options(from: &Map<String, Value>, to: &mut Map<String, Value>) {
    for k in OPTIONS {
        if let Some(v) = from.get(*k) {
            to.insert(lower_first(k), v.clone());
        }
    }
    // Legacy conditions and filters: the attributes and operators, not the values.
    for k in ["Expected", "KeyConditions", "QueryFilter", "ScanFilter"] {
        if let Some(Value::Object(c)) = from.get(k) {
            let ops: Map<String, Value> = c
                .iter()
                .map(|(name, cond)| {
                    let op = cond
                        .get("ComparisonOperator")
                        .cloned()
                        .or_else(|| cond.get("Exists").map(|e| json!({ "exists": e })))
                        .unwrap_or(Value::Null);
                    (name.clone(), op)
                })
                .collect();
            to.insert(lower_first(k), Value::Object(ops));
        }
    }
    if let Some(Value::Object(u)) = from.get("AttributeUpdates") {
        let acts: Map<String, Value> = u
            .iter()
            .map(|(name, a)| {
                (
                    name.clone(),
                    a.get("Action")
                        .cloned()
                        .unwrap_or(Value::String("PUT".into())),
                )
            })
            .collect();
        to.insert("attributeUpdates".into(), Value::Object(acts));
    }
    if let Some(Value::Object(k)) = from.get("ExclusiveStartKey") {
        // A start key may hold an index's key, which is an ordinary attribute of the table.
        to.insert(
            "exclusiveStartKey".into(),
            Value::Array(k.keys().map(|n| Value::String(n.clone())).collect()),
        );
    }
}

/// `requestParameters` of a single-table item call (`table` as the record names it).
pub fn item_call(
    op: &str,
    table: &str,
    body: &Map<String, Value>,
    schema: Option<&KeySchema>,
) -> Value {
    let mut p = Map::new();
    p.insert("tableName".into(), Value::String(table.into()));
    match op {
        "PutItem" => {
            if let Some(k) = schema.and_then(|s| key(body.get("Item"), Some(s))) {
                p.insert("key".into(), k);
            }
            if let Some(n) = names(body.get("Item")) {
                p.insert("item".into(), n);
            }
        }
        "GetItem" | "UpdateItem" | "DeleteItem" => {
            if let Some(k) = key(body.get("Key"), schema) {
                p.insert("key".into(), k);
            }
        }
        _ => {}
    }
    copy_options(body, &mut p);
    Value::Object(p)
}

/// One entry of a transaction or batch, as its record lists it.
pub fn entry(
    operation: &str,
    table: &str,
    body: &Map<String, Value>,
    schema: Option<&KeySchema>,
) -> Value {
    let mut p = Map::new();
    p.insert("operation".into(), Value::String(operation.into()));
    p.insert("tableName".into(), Value::String(table.into()));
    let k = if operation == "Put" {
        schema.and_then(|s| key(body.get("Item"), Some(s)))
    } else {
        key(body.get("Key"), schema)
    };
    if let Some(k) = k {
        p.insert("key".into(), k);
    }
    if operation == "Put" {
        if let Some(n) = names(body.get("Item")) {
            p.insert("items".into(), n);
        }
    }
    copy_options(body, &mut p);
    Value::Object(p)
}

/// The call-level options of a batch or transaction.
pub fn call_options(body: &Map<String, Value>, to: &mut Map<String, Value>) {
    for k in [
        "ReturnConsumedCapacity",
        "ReturnItemCollectionMetrics",
        "ClientRequestToken",
    ] {
        if let Some(v) = body.get(k) {
            to.insert(lower_first(k), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dynamodb::schema::music as schema;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn put_item_keeps_key_values_and_attribute_names_only() {
        let b = body(json!({
            "TableName": "Music",
            "Item": {"Artist": {"S": "No One"}, "SongTitle": {"S": "Today"}, "Secret": {"S": "SENTINEL"}},
            "ConditionExpression": "attribute_not_exists(#a) OR Price < :p",
            "ExpressionAttributeNames": {"#a": "Artist"},
            "ExpressionAttributeValues": {":p": {"N": "SENTINEL2"}},
            "Expected": {"Secret": {"Value": {"S": "SENTINEL3"}, "ComparisonOperator": "EQ"}},
            "ReturnConsumedCapacity": "TOTAL"
        }));
        let p = item_call("PutItem", "Music", &b, Some(&schema()));
        let text = p.to_string();
        assert!(!text.contains("SENTINEL"), "{text}");
        assert_eq!(p["key"], json!({"Artist": "No One", "SongTitle": "Today"}));
        assert_eq!(p["item"], json!(["Artist", "SongTitle", "Secret"]));
        assert_eq!(p["expected"], json!({"Secret": "EQ"}));
        assert_eq!(p["returnConsumedCapacity"], "TOTAL");
        // Without the schema a PutItem records no key at all.
        let p = item_call("PutItem", "Music", &b, None);
        assert!(p.get("key").is_none() && !p.to_string().contains("SENTINEL"));
    }

    #[test]
    fn a_key_never_carries_more_than_the_key() {
        let b = body(
            json!({"TableName": "Music", "Key": {"Artist": {"S": "a"}, "Other": {"S": "SENTINEL"}},
            "AttributeUpdates": {"Secret": {"Value": {"S": "SENTINEL"}, "Action": "PUT"}},
            "ExclusiveStartKey": {"gsiKey": {"S": "SENTINEL"}}}),
        );
        let p = item_call("UpdateItem", "Music", &b, Some(&schema()));
        assert_eq!(p["key"], json!({"Artist": "a"}));
        assert_eq!(p["attributeUpdates"], json!({"Secret": "PUT"}));
        assert!(!p.to_string().contains("SENTINEL"));
        let p = item_call("GetItem", "Music", &b, None);
        assert!(!p.to_string().contains("SENTINEL"), "{p}");
        assert_eq!(p["key"]["Artist"], "***(Redacted)");
    }

    #[test]
    fn deep_lower_camel() {
        assert_eq!(
            lower_camel_deep(&json!({"TableDescription": {"KeySchema": [{"AttributeName": "a"}]}})),
            json!({"tableDescription": {"keySchema": [{"attributeName": "a"}]}})
        );
    }
}
