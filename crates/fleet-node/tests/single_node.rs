//! One coordinator process: acknowledged writes survive SIGKILL; SIGTERM stops it cleanly.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{add_site, assert_has_all, client, cluster_names, register};
use fleet_api::proto::ReadConsistency;
use fleet_testkit::ProcessCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_acknowledged_writes_survive_sigkill_and_restart() {
    let mut cluster = ProcessCluster::start(1, &[]).await;
    let address = cluster.address(1);
    let mut c = client(&address).await;
    add_site(&mut c, "bergen").await.unwrap();
    let mut acknowledged = BTreeSet::new();
    // Concurrent writers, so that group commit acknowledges several entries per flush.
    let mut writers = Vec::new();
    for w in 0..8 {
        let address = address.clone();
        writers.push(tokio::spawn(async move {
            let mut c = client(&address).await;
            let mut done = Vec::new();
            for i in 0..25 {
                let name = format!("w{w}-{i}");
                register(&mut c, &name, "bergen")
                    .await
                    .expect("acknowledged");
                done.push(name);
            }
            done
        }));
    }
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 200);

    cluster.node(1).kill();
    cluster.node(1).restart();
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_has_all(
        &address,
        ReadConsistency::Linearizable,
        &acknowledged,
        "after SIGKILL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_node_cleanly_and_it_resumes_from_its_data_dir() {
    let mut cluster = ProcessCluster::start(1, &[]).await;
    let address = cluster.address(1);
    let mut c = client(&address).await;
    add_site(&mut c, "stavanger").await.unwrap();
    register(&mut c, "kept", "stavanger").await.unwrap();

    let status = cluster
        .node(1)
        .terminate(Duration::from_secs(10))
        .expect("exited after SIGTERM");
    assert!(status.success(), "SIGTERM exit status: {status:?}");
    let log = cluster.node(1).log();
    assert!(log.contains("stopped"), "no clean stop in the log:\n{log}");

    cluster.node(1).restart();
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let mut c = client(&address).await;
    let present = cluster_names(&mut c, ReadConsistency::Linearizable)
        .await
        .unwrap();
    assert!(present.contains("kept"));
}
