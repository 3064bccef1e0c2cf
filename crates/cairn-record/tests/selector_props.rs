//! Property tests of the selector matching rules.

use cairn_record::selector::*;
use proptest::prelude::*;

fn facts() -> impl Strategy<Value = EventFacts> {
    let cat = prop_oneof![Just("Management".to_string()), Just("Data".to_string())];
    let src = prop_oneof![
        Just("s3.amazonaws.com".to_string()),
        Just("dynamodb.amazonaws.com".to_string()),
        Just("kms.amazonaws.com".to_string()),
        Just("iam.amazonaws.com".to_string()),
    ];
    let bucket = prop_oneof![Just("artifacts"), Just("logs"), Just("art")];
    let key = "[a-z]{0,3}(/[a-z]{0,3})?";
    (
        cat,
        src,
        proptest::option::of(any::<bool>()),
        bucket,
        key,
        any::<bool>(),
    )
        .prop_map(|(category, source, read_only, bucket, key, ddb)| {
            let resources = if category == "Data" {
                if ddb {
                    vec![(
                        "AWS::DynamoDB::Table".to_string(),
                        format!("arn:aws:dynamodb:us-east-1:111122223333:table/{bucket}"),
                        false,
                    )]
                } else {
                    vec![
                        (
                            "AWS::S3::Object".to_string(),
                            format!("arn:aws:s3:::{bucket}/{key}"),
                            false,
                        ),
                        (
                            "AWS::S3::Bucket".to_string(),
                            format!("arn:aws:s3:::{bucket}"),
                            false,
                        ),
                    ]
                }
            } else {
                vec![]
            };
            EventFacts {
                category,
                source,
                name: "Op".into(),
                region: "us-east-1".into(),
                read_only,
                event_type: "AwsApiCall".into(),
                user_arn: None,
                console: None,
                resources,
            }
        })
}

fn selector() -> impl Strategy<Value = EventSelector> {
    let rw = prop_oneof![
        Just(ReadWriteType::All),
        Just(ReadWriteType::ReadOnly),
        Just(ReadWriteType::WriteOnly)
    ];
    let s3v = prop_oneof![
        Just("arn:aws:s3".to_string()),
        Just("arn:aws:s3:::artifacts/".to_string()),
        Just("arn:aws:s3:::art".to_string()),
        Just("arn:aws:s3:::logs/a".to_string()),
    ];
    let ddbv = prop_oneof![
        Just("arn:aws:dynamodb".to_string()),
        Just("arn:aws:dynamodb:us-east-1:111122223333:table/logs".to_string()),
    ];
    (
        rw,
        any::<bool>(),
        proptest::collection::vec(s3v, 0..3),
        proptest::collection::vec(ddbv, 0..2),
        any::<bool>(),
    )
        .prop_map(|(rw, mgmt, s3, ddb, excl)| {
            let mut data_resources = vec![];
            if !s3.is_empty() {
                data_resources.push(DataResource {
                    resource_type: "AWS::S3::Object".into(),
                    values: s3,
                });
            }
            if !ddb.is_empty() {
                data_resources.push(DataResource {
                    resource_type: "AWS::DynamoDB::Table".into(),
                    values: ddb,
                });
            }
            EventSelector {
                read_write_type: rw,
                include_management_events: mgmt,
                data_resources,
                exclude_management_event_sources: if excl {
                    vec!["kms.amazonaws.com".into()]
                } else {
                    vec![]
                },
            }
        })
}

proptest! {
    /// A basic selector and its advanced translation decide every event the same way.
    #[test]
    fn basic_and_advanced_translation_agree(sel in selector(), ev in facts()) {
        let adv = basic_to_advanced(&sel);
        let via_adv = adv.iter().any(|a| a.matches(&ev));
        prop_assert_eq!(sel.matches(&ev), via_adv);
    }

    /// ReadOnly and WriteOnly partition what All admits (for events that say which they are).
    #[test]
    fn read_write_types_partition_all(sel in selector(), ev in facts()) {
        prop_assume!(ev.read_only.is_some());
        let with = |rw| EventSelector { read_write_type: rw, ..sel.clone() }.matches(&ev);
        let (all, ro, wo) = (with(ReadWriteType::All), with(ReadWriteType::ReadOnly), with(ReadWriteType::WriteOnly));
        prop_assert_eq!(all, ro || wo);
        prop_assert!(!(ro && wo));
    }

    /// Equals and NotEquals over the same values are complements; so are the other pairs.
    #[test]
    fn negated_operators_are_complements(v in "[a-c]{0,4}", xs in proptest::collection::vec("[a-c]{1,3}", 1..4)) {
        let mk = |f: fn(&mut AdvancedFieldSelector, Vec<String>)| { let mut s = AdvancedFieldSelector { field: "eventName".into(), ..Default::default() }; f(&mut s, xs.clone()); s };
        let pairs = [
            (mk(|s, x| s.equals = Some(x)), mk(|s, x| s.not_equals = Some(x))),
            (mk(|s, x| s.starts_with = Some(x)), mk(|s, x| s.not_starts_with = Some(x))),
            (mk(|s, x| s.ends_with = Some(x)), mk(|s, x| s.not_ends_with = Some(x))),
        ];
        for (pos, neg) in pairs {
            prop_assert_ne!(pos.admits(&v), neg.admits(&v));
        }
    }

    /// Adding a selector never removes an event (selectors are OR-ed).
    #[test]
    fn selectors_are_monotone(a in selector(), b in selector(), ev in facts()) {
        let one = TrailSelectors::Basic(vec![a.clone()]).matches(&ev);
        let two = TrailSelectors::Basic(vec![a, b]).matches(&ev);
        prop_assert!(!one || two);
    }

    /// Management events are never admitted by a selector that excludes them, data events never
    /// by a selector without data resources.
    #[test]
    fn category_gates(sel in selector(), ev in facts()) {
        if ev.category == "Management" && !sel.include_management_events { prop_assert!(!sel.matches(&ev)); }
        if ev.category == "Data" && sel.data_resources.is_empty() { prop_assert!(!sel.matches(&ev)); }
    }
}
