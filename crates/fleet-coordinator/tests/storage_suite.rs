//! openraft's own storage conformance suite, run against the sled store on a temp dir.

use fleet_coordinator::store::{LogStore, StateMachineStore, open_db};
use fleet_coordinator::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path()).expect("open sled");
        let log = LogStore::open(&db, Default::default()).expect("log trees");
        let sm = StateMachineStore::open(&db).expect("snapshot tree");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}
