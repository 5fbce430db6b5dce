//! Compiles proto/fleet/v1 with tonic. Uses $PROTOC when set, else the vendored protoc, so a
//! machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let root = "../../proto";
    let files = [
        "../../proto/fleet/v1/fleet.proto",
        "../../proto/fleet/v1/agent.proto",
        "../../proto/fleet/v1/promotion.proto",
        "../../proto/fleet/v1/raft.proto",
    ];
    tonic_prost_build::configure().compile_protos(&files, &[root])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
