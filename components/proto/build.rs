//! Generates Rust types and tonic client/server stubs from `proto/*.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let files = [
        "metapb.proto",
        "eraftpb.proto",
        "errorpb.proto",
        "kvrpcpb.proto",
        "tikvpb.proto",
        "pdpb.proto",
        "keyspacepb.proto",
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("{dir}/{f}")).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile(&paths, &[dir.to_string()])?;
    Ok(())
}
