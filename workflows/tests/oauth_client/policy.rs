//! A partner's kind brings its documented sync policy; `[sync]` overrides it field by field.

use engine::schedule::{Blackout, ScheduleError, SyncPolicy};
use serde_json::{Value, json};
use workflows::partner::{ClientAuth, PartnerClient, PartnerConfig, PartnerConfigError};

use super::mock::{NAME, config_json};

fn config(kind: &str, sync: Option<Value>) -> PartnerConfig {
    let mut value = config_json("http://127.0.0.1:1", ClientAuth::ClientSecretBasic);
    value["kind"] = json!(kind);
    if let Some(sync) = sync {
        value["sync"] = sync;
    }
    serde_json::from_value(value).unwrap()
}

fn policy(kind: &str, sync: Option<Value>) -> SyncPolicy {
    PartnerClient::new(NAME, config(kind, sync))
        .unwrap()
        .sync_policy()
        .clone()
}

#[test]
fn a_dexcom_partner_without_a_sync_block_follows_dexcom_policy() {
    let p = policy("dexcom", None);
    assert_eq!(p, SyncPolicy::dexcom());
    assert_eq!((p.interval_min_secs, p.interval_max_secs), (2700, 4500));
    assert_eq!(
        p.blackouts,
        [Blackout::daily("02:45", "03:45", "America/Los_Angeles").unwrap()]
    );
    assert_eq!(policy("dexcom", Some(json!({}))), SyncPolicy::dexcom());
}

#[test]
fn a_pump_partner_gets_the_generic_policy() {
    assert_eq!(policy("pump", None), SyncPolicy::default());
    assert!(policy("pump", None).blackouts.is_empty());
}

#[test]
fn a_sync_block_overrides_only_the_fields_it_sets() {
    let p = policy(
        "dexcom",
        Some(json!({ "interval_min_secs": 600, "interval_max_secs": 900 })),
    );
    assert_eq!((p.interval_min_secs, p.interval_max_secs), (600, 900));
    assert_eq!(p.blackouts, SyncPolicy::dexcom().blackouts);
    assert_eq!(p.blackout_spread_secs, 900);

    let p = policy("dexcom", Some(json!({ "blackout_spread_secs": 0 })));
    assert_eq!(p.blackout_spread_secs, 0);
    assert_eq!(p.blackouts, SyncPolicy::dexcom().blackouts);
}

#[test]
fn an_empty_blackout_list_removes_the_kinds_blackouts_and_a_list_replaces_them() {
    let p = policy("dexcom", Some(json!({ "blackouts": [] })));
    assert!(p.blackouts.is_empty());
    assert_eq!(p.interval_min_secs, 2700);

    let utc = json!({ "daily": { "start": "10:00", "end": "11:00", "time_zone": "UTC" } });
    let p = policy("dexcom", Some(json!({ "blackouts": [utc] })));
    assert_eq!(
        p.blackouts,
        [Blackout::daily("10:00", "11:00", "UTC").unwrap()]
    );
    // A pump partner can be given blackouts of its own.
    let p = policy("pump", Some(json!({ "blackouts": [utc] })));
    assert_eq!(p.blackouts.len(), 1);
}

#[test]
fn the_resolved_policy_is_validated_as_a_whole() {
    // Valid on its own, but above the kind's interval_max_secs (4500).
    let err = PartnerClient::new(
        NAME,
        config("dexcom", Some(json!({ "interval_min_secs": 5000 }))),
    )
    .unwrap_err();
    assert_eq!(
        err,
        PartnerConfigError::Sync {
            partner: NAME.into(),
            reason: ScheduleError::IntervalOrder {
                min: 5000,
                max: 4500
            },
        }
    );
    assert!(err.to_string().contains("sync"), "{err}");
    let ok = config(
        "dexcom",
        Some(json!({ "interval_min_secs": 5000, "interval_max_secs": 6000 })),
    );
    assert_eq!(ok.sync_policy().unwrap().interval_min_secs, 5000);
}

#[test]
fn unknown_or_malformed_sync_fields_are_rejected_when_read() {
    let mut value = config_json("http://127.0.0.1:1", ClientAuth::ClientSecretBasic);
    value["sync"] = json!({ "interval_minutes": 5 });
    let err = serde_json::from_value::<PartnerConfig>(value.clone()).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let bad_time = json!({ "daily": { "start": "25:00", "end": "03:00", "time_zone": "UTC" } });
    value["sync"] = json!({ "blackouts": [bad_time] });
    let err = serde_json::from_value::<PartnerConfig>(value).unwrap_err();
    assert!(err.to_string().contains("invalid time of day"), "{err}");
}
