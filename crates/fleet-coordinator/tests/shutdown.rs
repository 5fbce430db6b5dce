//! ARCHITECTURE.md: the coordinator's background tasks (disk probe, leadership guard, planner,
//! clock check, metrics, fatal-error watch) stop at shutdown. A real single-node coordinator
//! (sled on disk, gRPC on loopback) runs in a runtime of its own; once `run` returns, every
//! task it spawned has ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_coordinator::serve::{self, CoordinatorConfig, Start};
use fleet_core::Command;

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn a_stopped_coordinator_leaves_none_of_its_tasks_running() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            CoordinatorConfig::new(1, free_port(), dir.path().join("data"), Start::Bootstrap);
        config.disk_probe_interval = Duration::from_millis(100);
        config.disk_probe_writes = 2;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<u64>();
        let node = tokio::spawn(serve::run(
            config,
            async {
                let _ = stop_rx.await;
            },
            move |c: Arc<fleet_coordinator::coordinator::Coordinator>| async move {
                let (index, _) = c
                    .write(
                        Command::AddSite {
                            name: "oslo".into(),
                        },
                        "admin".into(),
                        String::new(),
                    )
                    .await?;
                let _ = ready_tx.send(index);
                Ok(())
            },
        ));
        let index = ready_rx.await.expect("the coordinator started and wrote");
        assert!(index > 0);
        // Let the probe, guard, planner and clock check run a few rounds.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let running = metrics.num_alive_tasks();
        assert!(
            running >= before + 6,
            "expected the node's tasks to be running: {running} alive, {before} before"
        );

        stop_tx.send(()).unwrap();
        node.await.unwrap().expect("a clean shutdown");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let alive = metrics.num_alive_tasks();
            if alive <= before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} tasks still alive 5 s after shutdown ({before} before the node started)",
                alive - before
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
