//! The product `fleet-node` (`cargo build -p fleet-node`, or `--release`: a build without
//! fleet-testkit) has no failpoint that changes behaviour. Shown on the failpoint that does the
//! most harm, `stale-linearizable-read` (a linearizable read served from local state without a
//! leader's read index): a node alone, its two peers down, must refuse a linearizable read
//! (UNAVAILABLE, no leader); a test build with the failpoint answers it from its own state.
//!
//! The product binary is built outside this test build (Cargo unifies features within one
//! build, so this build's own `fleet-node` has failpoints): set `FLEET_PRODUCT_NODE` to it.
//! CI builds it and runs this test with it; without it the test says it is skipped.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use fleet_api::proto::{ListSitesRequest, ReadConsistency};
use fleet_testkit::ProcessCluster;

const STALE_READ: (&str, &str) = ("FAILPOINTS", "stale-linearizable-read=return");

/// A linearizable `ListSites` on `address`: the site names, or the status code.
async fn linearizable_sites(address: &str) -> Result<Vec<String>, tonic::Code> {
    let mut client = common::client(address).await;
    let request = ListSitesRequest {
        consistency: ReadConsistency::Linearizable as i32,
    };
    tokio::time::timeout(Duration::from_secs(20), client.list_sites(request))
        .await
        .expect("an answer within 20 s")
        .map(|r| r.into_inner().sites.into_iter().map(|s| s.name).collect())
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_build_ignores_the_stale_read_failpoint() {
    let Some(product) = std::env::var_os("FLEET_PRODUCT_NODE").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED the_product_build_ignores_the_stale_read_failpoint: set FLEET_PRODUCT_NODE \
             to a fleet-node built by `cargo build -p fleet-node` (CI does)"
        );
        return;
    };
    assert!(
        product.is_file(),
        "FLEET_PRODUCT_NODE={product:?} is not a file"
    );

    let mut cluster = ProcessCluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let mut client = common::client(&cluster.address(leader)).await;
    let index = common::add_site(&mut client, "oslo").await.unwrap();
    for id in 1..=3 {
        cluster
            .wait_for_applied(id, index, Duration::from_secs(10))
            .await;
    }
    // Node 1 alone: no majority, so no leader and no read index.
    for id in 1..=3 {
        cluster.node(id).kill();
    }
    let address = cluster.address(1);

    // The check of the check: the test build, failpoint on, answers without a leader, from
    // whatever its own state holds (a restarted node alone may not have applied the write
    // again yet: a stale answer is just what the failpoint gives).
    cluster.node(1).restart_with_env(&[STALE_READ]);
    let answer = linearizable_sites(&address).await;
    assert!(
        answer.is_ok(),
        "the test build did not take the failpoint ({answer:?}); this test would prove nothing"
    );
    cluster.node(1).kill();

    // The product build, same environment: no leader, so no linearizable read.
    cluster.node(1).restart_with_binary(&product, &[STALE_READ]);
    assert_eq!(
        linearizable_sites(&address).await,
        Err(tonic::Code::Unavailable),
        "the product build served a linearizable read without a leader"
    );
    let log = cluster.node(1).log();
    assert!(
        log.contains("FAILPOINTS is ignored"),
        "the product build did not say it ignores FAILPOINTS:\n{log}"
    );
}
