//! The box's own decisions that do not need a cluster of nodes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use partita_e2e::api::MemoryApi;
use partita_e2e::inbox::controller_manager_leads;

fn lease(renewed_secs_ago: i64, duration: i32) -> Lease {
    let renewed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-controller-manager", "namespace": "kube-system"},
        "spec": {"holderIdentity": "kcm-1", "leaseDurationSeconds": duration,
                 "renewTime": renewed.to_string()}
    }))
    .unwrap()
}

#[tokio::test]
async fn the_statefulset_controller_stays_off_only_while_a_controller_manager_leads() {
    let api = MemoryApi::new();
    let client = api.client();
    assert!(
        !controller_manager_leads(&client).await,
        "no lease: no controller manager"
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases
        .create(&PostParams::default(), &lease(60, 15))
        .await
        .unwrap();
    assert!(
        !controller_manager_leads(&client).await,
        "a lease not renewed for 60 s of 15 is stale"
    );

    leases
        .replace(
            "kube-controller-manager",
            &PostParams::default(),
            &lease(1, 15),
        )
        .await
        .unwrap();
    assert!(
        controller_manager_leads(&client).await,
        "a lease renewed a second ago is held"
    );
}
