//! Helpers shared by the process tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_api::proto::fleet_service_client::FleetServiceClient;
use fleet_api::proto::*;
use fleet_testkit::connect;
use tonic::transport::Channel;

pub async fn client(address: &str) -> FleetServiceClient<Channel> {
    for _ in 0..100 {
        if let Some(c) = connect(address).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {address}");
}

pub async fn add_site(
    client: &mut FleetServiceClient<Channel>,
    name: &str,
) -> Result<u64, tonic::Status> {
    client
        .add_site(AddSiteRequest {
            name: name.into(),
            reason: String::new(),
        })
        .await
        .map(|r| r.into_inner().result.unwrap().log_index)
}

pub async fn register(
    client: &mut FleetServiceClient<Channel>,
    name: &str,
    site: &str,
) -> Result<u64, tonic::Status> {
    let mut request = tonic::Request::new(RegisterClusterRequest {
        name: name.into(),
        site: site.into(),
        environment: "staging".into(),
        labels: Default::default(),
        reason: "test".into(),
    });
    request.set_timeout(Duration::from_secs(10));
    client
        .register_cluster(request)
        .await
        .map(|r| r.into_inner().result.unwrap().log_index)
}

/// Asserts that a read through `address` sees every name in `acknowledged`.
pub async fn assert_has_all(
    address: &str,
    consistency: ReadConsistency,
    acknowledged: &BTreeSet<String>,
    what: &str,
) {
    let mut c = client(address).await;
    let present = cluster_names(&mut c, consistency).await.expect("read");
    let missing: Vec<_> = acknowledged.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{what}: acknowledged writes missing {missing:?}"
    );
}

pub async fn cluster_names(
    client: &mut FleetServiceClient<Channel>,
    consistency: ReadConsistency,
) -> Result<BTreeSet<String>, tonic::Status> {
    let reply = client
        .list_clusters(ListClustersRequest {
            consistency: consistency as i32,
        })
        .await?;
    Ok(reply
        .into_inner()
        .clusters
        .into_iter()
        .map(|c| c.name)
        .collect())
}
