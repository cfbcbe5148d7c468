//! The device index (`record_device_days` / `list_device_days`) on both
//! stores: rows of one (project, day, device) merge, a day pages over its
//! shards with a cursor, projects and days are apart, bad rows are refused.

use std::collections::{BTreeMap, BTreeSet};

use qyzar_shared::ids::{DeviceId, ProjectId};
use qyzar_store::{DataStore, DeviceDay, StoreError, DAY_MS, MAX_DEVICE_COMPONENTS};

fn today() -> i64 {
    super::suite::now().div_euclid(DAY_MS)
}

fn row(p: &ProjectId, d: &DeviceId, day: i64, first: i64, last: i64, browser: &str) -> DeviceDay {
    DeviceDay {
        project_id: p.clone(),
        device_id: d.clone(),
        day,
        first_seen: day * DAY_MS + first,
        last_seen: day * DAY_MS + last,
        browser: browser.into(),
        os: "Linux".into(),
        platform: "desktop".into(),
        region: Some("DE".into()),
        risk_score: 10,
        bot: false,
        components: BTreeMap::from([
            ("canvasHash".to_owned(), "c0ffee".to_owned()),
            ("timezone".to_owned(), "Europe/Berlin".to_owned()),
        ]),
    }
}

/// Every row of the day, page by page with the last row as the cursor.
async fn all_pages(store: &dyn DataStore, p: &ProjectId, day: i64, page: usize) -> Vec<DeviceDay> {
    let mut out: Vec<DeviceDay> = Vec::new();
    loop {
        let cursor = out
            .last()
            .map(|r| (DeviceDay::shard(&r.device_id), r.device_id.clone()));
        let rows = store
            .list_device_days(p, day, cursor.as_ref().map(|(s, d)| (*s, d)), page)
            .await
            .expect("list");
        assert!(rows.len() <= page);
        let done = rows.len() < page;
        out.extend(rows);
        if done {
            return out;
        }
    }
}

pub(crate) async fn device_days_merge_and_retries_change_nothing(store: &dyn DataStore) {
    let p = ProjectId::generate();
    let d = DeviceId::generate();
    let day = today();
    // Out of order: the later session first, then an earlier one, then the
    // later one again (a retried batch).
    let later = row(&p, &d, day, 5_000, 9_000, "Firefox");
    let earlier = row(&p, &d, day, 1_000, 2_000, "Chrome");
    store
        .record_device_days(std::slice::from_ref(&later))
        .await
        .expect("write");
    store.record_device_days(&[earlier]).await.expect("write");
    store
        .record_device_days(std::slice::from_ref(&later))
        .await
        .expect("retry");
    let rows = store
        .list_device_days(&p, day, None, 10)
        .await
        .expect("list");
    assert_eq!(rows.len(), 1, "one row per device and day");
    let r = &rows[0];
    assert_eq!(
        r.first_seen,
        day * DAY_MS + 1_000,
        "the earliest first seen"
    );
    assert_eq!(r.last_seen, day * DAY_MS + 9_000, "the latest last seen");
    assert_eq!(r.browser, "Firefox", "the summary of the latest session");
    assert_eq!(r.components, later.components);
    // Another day and another project see nothing of it.
    assert!(store
        .list_device_days(&p, day - 1, None, 10)
        .await
        .expect("list")
        .is_empty());
    let other = ProjectId::generate();
    assert!(store
        .list_device_days(&other, day, None, 10)
        .await
        .expect("list")
        .is_empty());
}

pub(crate) async fn device_days_page_over_shards_with_a_cursor(store: &dyn DataStore) {
    let p = ProjectId::generate();
    let day = today() - 3;
    let devices: Vec<DeviceId> = (0..45).map(|_| DeviceId::generate()).collect();
    let rows: Vec<DeviceDay> = devices
        .iter()
        .enumerate()
        .map(|(k, d)| row(&p, d, day, k as i64, k as i64 + 10, "Chrome"))
        .collect();
    store.record_device_days(&rows).await.expect("write");
    for page in [1, 7, 45, 100] {
        let got = all_pages(store, &p, day, page).await;
        let ids: Vec<&DeviceId> = got.iter().map(|r| &r.device_id).collect();
        let unique: BTreeSet<&DeviceId> = ids.iter().copied().collect();
        assert_eq!(ids.len(), 45, "page size {page}: every device once");
        assert_eq!(unique.len(), 45, "page size {page}: no device twice");
        let keys: Vec<(u8, &DeviceId)> = got
            .iter()
            .map(|r| (DeviceDay::shard(&r.device_id), &r.device_id))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "page size {page}: (shard, device) order");
    }
    assert!(
        devices
            .iter()
            .map(DeviceDay::shard)
            .collect::<BTreeSet<_>>()
            .len()
            > 1,
        "45 devices spread over several shards"
    );
}

pub(crate) async fn device_days_refuse_bad_rows(store: &dyn DataStore) {
    let p = ProjectId::generate();
    let d = DeviceId::generate();
    let day = today();
    let mut outside = row(&p, &d, day, 0, 10, "Chrome");
    outside.last_seen = (day + 1) * DAY_MS;
    let mut reversed = row(&p, &d, day, 50, 10, "Chrome");
    reversed.first_seen = day * DAY_MS + 50;
    let mut crowded = row(&p, &d, day, 0, 10, "Chrome");
    crowded.components = (0..=MAX_DEVICE_COMPONENTS)
        .map(|k| (format!("k{k}"), "v".to_owned()))
        .collect();
    let mut risky = row(&p, &d, day, 0, 10, "Chrome");
    risky.risk_score = 101;
    for bad in [outside, reversed, crowded, risky] {
        let good = row(&p, &d, day, 0, 10, "Chrome");
        // One bad row refuses the whole batch: nothing of it is written.
        let e = store
            .record_device_days(&[good, bad])
            .await
            .expect_err("refused");
        assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    }
    assert!(store
        .list_device_days(&p, day, None, 10)
        .await
        .expect("list")
        .is_empty());
}
