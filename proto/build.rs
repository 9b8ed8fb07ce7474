//! Compiles `cri/api.proto` with protox (pure Rust, no system `protoc`) into prost
//! messages, tonic server and client stubs, and pbjson serde impls (protojson: camelCase
//! names, enums as names) so `crustctl -o json` prints what crictl prints.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=cri/api.proto");
    let fds = protox::compile(["api.proto"], ["cri"])?;
    let descriptor = fds.encode_to_vec();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("cri_descriptor.bin"), &descriptor)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        // Print false, 0 and "" too, as crictl does: a false condition must show.
        .emit_fields()
        .register_descriptors(&descriptor)?
        .build(&[".runtime.v1"])?;
    Ok(())
}
