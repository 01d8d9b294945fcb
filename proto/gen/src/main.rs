//! Regenerates the checked-in Rust code of `proto/` from its `.proto` files.
//!
//! Run from the workspace root: `cargo run -p arrowhead-proto-gen`. It needs `protoc` (Debian:
//! `protobuf-compiler`). CI runs it and fails when `git diff` shows the checked-in code is
//! stale. prost-build's version is pinned so the output only changes when we choose.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("src/gen");
    std::fs::create_dir_all(&out)?;
    prost_build::Config::new().out_dir(&out).compile_protos(
        &[root.join("prometheus/remote.proto")],
        std::slice::from_ref(&root),
    )?;
    println!("generated {}", out.display());
    Ok(())
}
