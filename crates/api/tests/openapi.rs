//! The OpenAPI document (`openapi.yaml`) and the code cannot drift: every
//! route is documented with its method and every documented operation is
//! a route, and the JSON bodies have the fields the document lists.

use std::collections::BTreeSet;

use api::Route;
use api::events::{Cause, Event, EventKind, RoundSummary};
use api::types::{
    ErrorBody, GuestCounters, MigrateRequest, MigrationCancelling, MigrationStarted,
    MigrationStatus, Ping, SnapshotRequest, SnapshotResponse, VersionInfo, VmStatus,
};
use serde::Serialize;
use serde_json::Value;

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Field names of a documented schema.
fn documented_fields(doc: &Value, schema: &str) -> BTreeSet<String> {
    let s = &doc["components"]["schemas"][schema];
    assert!(s.is_object(), "schema {schema} is not documented");
    s["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema} has no properties"))
        .keys()
        .cloned()
        .collect()
}

/// Field names of a value serialized with every optional field present.
fn fields(value: &impl Serialize) -> BTreeSet<String> {
    match serde_json::to_value(value).unwrap() {
        Value::Object(m) => m.keys().cloned().collect(),
        v => panic!("not an object: {v}"),
    }
}

fn assert_same(doc: &Value, schema: &str, value: &impl Serialize) {
    assert_eq!(
        documented_fields(doc, schema),
        fields(value),
        "schema {schema} and the Rust type disagree"
    );
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_a_route() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let code: BTreeSet<(String, String)> = Route::ALL
        .iter()
        .map(|r| (r.method().to_string(), r.path().to_string()))
        .collect();
    assert_eq!(documented, code, "openapi.yaml and api::Route disagree");
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert_eq!(doc["info"]["version"], api::API_VERSION);
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let text = serde_json::to_string(&doc).unwrap();
    for piece in text.split("\"#/components/").skip(1) {
        let reference = &piece[..piece.find('"').unwrap()];
        let mut at = &doc["components"];
        for part in reference.split('/') {
            at = &at[part];
        }
        assert!(at.is_object(), "#/components/{reference} does not exist");
    }
}

#[test]
fn bodies_have_the_documented_fields() {
    let doc = document();
    assert_same(
        &doc,
        "VmStatus",
        &VmStatus {
            status_page_addr: Some(0x6000),
            guest: Some(GuestCounters::default()),
            exit_status: Some(1),
            error: Some("x".into()),
            ..Default::default()
        },
    );
    assert_same(&doc, "GuestCounters", &GuestCounters::default());
    assert_same(
        &doc,
        "SnapshotRequest",
        &SnapshotRequest { path: "/x".into() },
    );
    assert_same(&doc, "SnapshotResponse", &SnapshotResponse::default());
    assert_same(
        &doc,
        "MigrateRequest",
        &MigrateRequest {
            to: "h:1".into(),
            strategy: Some("xen".into()),
            strategy_params: [("max-rounds".to_string(), "5".to_string())].into(),
            max_bandwidth_bps: Some(1),
            link_bandwidth_bps: Some(1),
            max_downtime_ms: Some(1.0),
            max_rounds: Some(3),
            timeout_ms: Some(1000),
            on_timeout: Some("abort".into()),
            lease_ms: Some(500),
            recovery_timeout_ms: Some(30000),
            sync_interval_ms: Some(100),
            secret_file: Some("/s".into()),
            tls_dir: Some("/t".into()),
            tls_name: Some("dst".into()),
        },
    );
    assert_same(&doc, "MigrationStarted", &MigrationStarted::default());
    assert_same(&doc, "MigrationCancelling", &MigrationCancelling::default());
    assert_same(&doc, "Ping", &Ping::default());
    assert_same(&doc, "VersionInfo", &VersionInfo::default());
    assert_same(&doc, "ErrorBody", &ErrorBody { error: "x".into() });
    let status = MigrationStatus {
        id: "0".into(),
        to: "h:1".into(),
        done: false,
        progress: migrate::ProgressSnapshot::default(),
        report: None,
        error: None,
    };
    assert_same(&doc, "MigrationStatus", &status);
    assert_same(&doc, "MigrationProgress", &status.progress);
}

/// One event of each kind, with every optional field present.
fn every_kind() -> Vec<EventKind> {
    let m = || "0123456789abcdef".to_string();
    vec![
        EventKind::VmCreated {
            state: "booting".into(),
        },
        EventKind::VmStarted {
            state: "running".into(),
        },
        EventKind::VmPaused {
            cause: Cause::Operator,
        },
        EventKind::VmResumed {
            cause: Cause::Migration,
        },
        EventKind::VmStopped {
            reason: "guest-exit".into(),
            exit_status: Some(3),
            error: Some("x".into()),
        },
        EventKind::MigrationStarted {
            migration: m(),
            to: "h:1".into(),
            strategy: "xen".into(),
        },
        EventKind::MigrationPhase {
            migration: m(),
            phase: "iterative".into(),
        },
        EventKind::MigrationRound {
            migration: m(),
            round: RoundSummary::default(),
        },
        EventKind::MigrationCompleted {
            migration: m(),
            to: "h:1".into(),
            downtime_ms: Some(1.0),
            total_time_ms: 2.0,
            bytes_sent: 3,
            rounds: 4,
        },
        EventKind::MigrationRolledBack {
            migration: m(),
            cancelled: false,
            error: "x".into(),
        },
        EventKind::MigrationInDoubt {
            migration: m(),
            error: "x".into(),
        },
        EventKind::MigrationInterrupted {
            migration: m(),
            error: "x".into(),
        },
        EventKind::MigrationReceived {
            migration: m(),
            from: Some("h:2".into()),
        },
        EventKind::EventsLost { count: 1 },
    ]
}

#[test]
fn every_event_type_is_documented_with_its_fields() {
    let doc = document();
    let envelope = documented_fields(&doc, "EventEnvelope");
    let event = &doc["components"]["schemas"]["Event"]["allOf"][1];
    let mapping = event["discriminator"]["mapping"].as_object().unwrap();
    let kinds = every_kind();
    assert_eq!(
        mapping.len(),
        kinds.len(),
        "documented event types: {:?}",
        mapping.keys().collect::<Vec<_>>()
    );
    for kind in kinds {
        let e = Event {
            seq: 1,
            unix_ms: 2,
            vm: "vm".into(),
            kind,
        };
        let name = e.kind.name();
        let reference = mapping[name]
            .as_str()
            .unwrap_or_else(|| panic!("event type {name} is not documented"));
        let schema = reference.rsplit('/').next().unwrap();
        let mut want = documented_fields(&doc, schema);
        want.extend(envelope.iter().cloned());
        assert_eq!(
            want,
            fields(&e),
            "event {name} and schema {schema} disagree"
        );
    }
}
