//! Operator alerts fold by partner and code, and keep bounded, sanitised text.

use engine::{model::ErrorInfo, testing::TestDb};

engine::backend_tests!(repeated_alerts_fold_into_one_with_a_count,);

async fn repeated_alerts_fold_into_one_with_a_count(db: &TestDb) {
    let store = db.store().await;
    let long = format!("{}\u{0}\u{1b}[31m", "x".repeat(5000));
    for _ in 0..3 {
        store
            .raise_alert(
                "sandbox-cgm",
                None,
                &ErrorInfo::new("authorization_failed", long.clone()),
            )
            .await
            .unwrap();
    }
    let count = store
        .raise_alert("sandbox-cgm", None, &ErrorInfo::new("other", "y"))
        .await
        .unwrap();
    assert_eq!(count, 1);
    let alerts = store.alerts(10).await.unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let folded = alerts
        .iter()
        .find(|a| a.code == "authorization_failed")
        .unwrap();
    assert_eq!(folded.count, 3);
    assert!(folded.message.chars().count() <= 500);
    assert!(!folded.message.contains('\u{0}') && !folded.message.contains('\u{1b}'));
    let odd = store
        .raise_alert("sandbox-cgm", None, &ErrorInfo::new("<b>".repeat(40), "z"))
        .await;
    assert!(odd.is_ok());
    assert!(
        store
            .alerts(10)
            .await
            .unwrap()
            .iter()
            .any(|a| a.code == "invalid_code"),
        "a code that is not a code is not repeated"
    );
}
