//! Compiles `cri/api.proto` and crust's own `services/crust/v1/images.proto` with protox (pure
//! Rust, no system `protoc`) into prost messages, tonic server and client stubs, and
//! pbjson serde impls for the CRI (protojson: camelCase names, enums as names) so
//! `crustctl -o json` prints what crictl prints.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=cri/api.proto");
    println!("cargo:rerun-if-changed=services/crust/v1/images.proto");
    // `services/crust/v1/images.proto` imports `api.proto` (its PullImageRequest) from
    // `cri/`; each tree is its own include root so proto paths stay `crust/v1/...`.
    let fds = protox::compile(["api.proto", "crust/v1/images.proto"], ["cri", "services"])?;
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
