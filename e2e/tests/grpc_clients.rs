//! Clients other than Go's and tonic's: gRPC C-core (Python grpcio) sends the socket's
//! path, %-encoded, as `:authority`, which h2 alone refuses with PROTOCOL_ERROR on every
//! call (server/src/authority.rs). grpcio comes from PyPI (scripts/test.sh installs it);
//! `$CRUST_TEST_PYTHON` picks the interpreter.

use std::process::Command;

use crust_e2e::Sandbox;
use crust_proto::runtime::v1::{ListPodSandboxResponse, VersionResponse};
use prost::Message;

/// Calls RPCs on one channel with grpcio, raw bytes in and out (no generated stubs
/// needed), and prints each reply as hex. argv[2], when given, is the authority to
/// send (grpc-java sends the bare path); else grpcio's own (%-encoded path).
const CLIENT: &str = r#"
import grpc, sys
opts = [("grpc.default_authority", sys.argv[2])] if len(sys.argv) > 2 else []
ch = grpc.insecure_channel(sys.argv[1], options=opts)
for method in ("/runtime.v1.RuntimeService/Version", "/runtime.v1.RuntimeService/ListPodSandbox", "/runtime.v1.RuntimeService/Version"):
    call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
    print(call(b"", timeout=10).hex())
"#;

#[tokio::test]
async fn python_grpcio_calls_crustd_on_its_socket() {
    let sandbox = Sandbox::new().unwrap();
    let mut d = sandbox.start().unwrap();
    d.wait_ready().await.unwrap();
    let socket = sandbox.socket().display().to_string();
    let encoded = socket.trim_start_matches('/').replace('/', "%2F");
    for authority in [
        None,
        Some(encoded.as_str()),
        Some(socket.as_str()),
        Some("localhost"),
    ] {
        call_with_grpcio(&sandbox, &d, authority);
    }
}

fn call_with_grpcio(sandbox: &Sandbox, d: &crust_e2e::Crustd, authority: Option<&str>) {
    let python = std::env::var("CRUST_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let endpoint = sandbox.endpoint();
    let mut args = vec!["-c", CLIENT, &endpoint];
    args.extend(authority);
    let out = Command::new(&python)
        .args(&args)
        .env("GRPC_VERBOSITY", "NONE")
        .output()
        .unwrap_or_else(|e| panic!("run {python} (scripts/test.sh installs grpcio): {e}"));
    assert!(
        out.status.success(),
        "grpcio client (authority {authority:?}) failed ({}): {}\n--- crustd\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );
    let replies: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| hex::decode(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 3, "{replies:?}");
    for v in [&replies[0], &replies[2]] {
        let v = VersionResponse::decode(&v[..]).unwrap();
        assert_eq!(
            (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
            ("crust", "v1")
        );
    }
    let pods = ListPodSandboxResponse::decode(&replies[1][..]).unwrap();
    assert!(pods.items.is_empty(), "{pods:?}");
}
