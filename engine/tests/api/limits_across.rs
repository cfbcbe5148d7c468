//! Rate limits across engines on one CQL store (`engine/src/limit_sync.rs`):
//! two engines share a key's id, each publishes its hot keys, and each
//! charges what the other consumed, so together they let through what one
//! engine alone would (plus what arrives between two passes). The passes
//! are run by hand here, so nothing depends on timing.

use std::sync::Arc;

use qyzar_engine::limiter::{BucketCheck, Rule};
use qyzar_engine::state::{SharedLimits, StateOptions};
use qyzar_engine::Engine;
use qyzar_shared::ids::ProjectId;

use crate::helpers::{store, Store};

fn engine(store: &Arc<dyn qyzar_store::DataStore>, id: &str) -> Arc<Engine> {
    Engine::new(
        Arc::clone(store),
        StateOptions {
            shared_limits: Some(SharedLimits {
                engine_id: id.into(),
                seed: [7; 32],
            }),
            ..Default::default()
        },
    )
}

/// One call of cost 1 on `key` (ip 192.0.2.1) through `e`'s limiter, with
/// what the route records for the sync; whether it was allowed.
fn call(e: &Engine, project: &ProjectId, rule: Rule) -> bool {
    let limiter = e.limiter.project(project.as_str(), 10_000);
    let key = limiter
        .bucket_key(project.as_str(), "ip", b"192.0.2.1")
        .unwrap();
    let check = BucketCheck { key, rule };
    let d = limiter
        .check(limiter.now_nanos(), &[check], 1, false)
        .unwrap();
    if d.allowed {
        let o = d.buckets()[0];
        let used = qyzar_engine::limit_sync::Consumed {
            cost: 1,
            limit: o.limit,
            remaining: o.remaining,
            interval: rule.emission_interval_nanos(),
        };
        e.limit_sync
            .as_ref()
            .unwrap()
            .record(project, key, used, qyzar_shared::time::now_ms());
    }
    d.allowed
}

async fn sync(e: &Engine) -> u64 {
    e.limit_sync
        .as_ref()
        .unwrap()
        .sync_once(&*e.store, &e.limiter, qyzar_shared::time::now_ms())
        .await
        .unwrap()
}

#[tokio::test]
async fn two_engines_share_one_keys_limit_through_cql() {
    let Some((store, _dir)) = store(Store::Cql).await else {
        return;
    };
    let (a, b) = (engine(&store, "engine-a"), engine(&store, "engine-b"));
    let project = ProjectId::generate();
    // A long window: nothing refills during the test.
    let rule = Rule::new(10, 3600);

    // The same key has the same id on both engines.
    let ka = a.limiter.project(project.as_str(), 10_000).bucket_key(
        project.as_str(),
        "ip",
        b"192.0.2.1",
    );
    let kb = b.limiter.project(project.as_str(), 10_000).bucket_key(
        project.as_str(),
        "ip",
        b"192.0.2.1",
    );
    assert_eq!(ka.unwrap(), kb.unwrap());

    // Engine a spends 6 of the 10 cells and publishes.
    for _ in 0..6 {
        assert!(call(&a, &project, rule));
    }
    assert_eq!(sync(&a).await, 0, "nothing from other engines yet");
    // Engine b spends one, then folds a's six in.
    assert!(call(&b, &project, rule));
    assert_eq!(sync(&b).await, 6);
    // 7 of 10 spent in all: b allows 3 more, then denies.
    let allowed_b = (0..6).filter(|_| call(&b, &project, rule)).count();
    assert_eq!(allowed_b, 3, "b charged a's consumption");
    // b publishes its 4; a folds them in and is denied too.
    sync(&b).await;
    assert_eq!(sync(&a).await, 4);
    assert!(!call(&a, &project, rule), "a charged b's consumption");

    // Repeating the passes charges nothing twice.
    assert_eq!(sync(&a).await, 0);
    assert_eq!(sync(&b).await, 0);

    // A restarted engine (a new id, empty memory) decides its first call
    // alone (the one interval a restart may lose), then reads both
    // engines' rows as others' and charges their total.
    let c = engine(&store, "engine-a-restarted");
    assert!(call(&c, &project, rule));
    assert_eq!(sync(&c).await, 10);
    assert!(!call(&c, &project, rule));
}
