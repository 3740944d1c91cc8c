//! Generates Rust types and tonic client/server stubs from `proto/*.proto`,
//! using our codec (`src/codec.rs`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!(): the compiled build script
    // is shared by checkouts at different paths using one target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let dir = format!("{manifest_dir}/../../proto");
    let files = [
        "metapb.proto",
        "eraftpb.proto",
        "raft_cmdpb.proto",
        "raft_serverpb.proto",
        "errorpb.proto",
        "deadlock.proto",
        "kvrpcpb.proto",
        "tikvpb.proto",
        "pdpb.proto",
        "keyspacepb.proto",
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("{dir}/{f}")).collect();
    println!("cargo:rerun-if-changed=build.rs");
    for p in &paths {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile(&paths, std::slice::from_ref(&dir))?;
    // tonic-build 0.10 hard-codes tonic's prost codec; point the generated
    // services and clients at ours (see src/codec.rs).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let code = std::fs::read_to_string(&path)?;
            let code = code.replace("tonic::codec::ProstCodec", "crate::codec::StrictProstCodec");
            std::fs::write(&path, code)?;
        }
    }
    Ok(())
}
