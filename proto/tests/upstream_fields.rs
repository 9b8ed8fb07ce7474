//! Our `cri/api.proto` must be wire-compatible with upstream `k8s.io/cri-api`: every
//! field number, type and label, every enum value and every RPC signature listed in
//! `upstream_fields.txt` (generated from upstream's descriptor, not ours) must be
//! present in the descriptor we compile.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::{
    DescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

fn describe_messages(prefix: &str, messages: &[DescriptorProto], out: &mut BTreeSet<String>) {
    for m in messages {
        if m.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let name = if prefix.is_empty() {
            m.name().to_string()
        } else {
            format!("{prefix}.{}", m.name())
        };
        for f in &m.field {
            let ty = match f.r#type() {
                Type::Message | Type::Enum => f.type_name().to_string(),
                other => other.as_str_name().to_string(),
            };
            let label = match f.label() {
                Label::Repeated => "LABEL_REPEATED",
                _ => "LABEL_OPTIONAL",
            };
            out.insert(format!(
                "field {name}.{} {} {ty} {label}",
                f.name(),
                f.number()
            ));
        }
        for e in &m.enum_type {
            for v in &e.value {
                out.insert(format!(
                    "enum {name}.{}.{} {}",
                    e.name(),
                    v.name(),
                    v.number()
                ));
            }
        }
        describe_messages(&name, &m.nested_type, out);
    }
}

fn ours() -> BTreeSet<String> {
    let set = FileDescriptorSet::decode(crust_proto::FILE_DESCRIPTOR_SET)
        .expect("embedded descriptor decodes");
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "runtime.v1")
        .expect("runtime.v1 file");
    let mut out = BTreeSet::new();
    describe_messages("", &file.message_type, &mut out);
    for e in &file.enum_type {
        for v in &e.value {
            out.insert(format!("enum {}.{} {}", e.name(), v.name(), v.number()));
        }
    }
    for s in &file.service {
        for m in &s.method {
            let kind = if m.server_streaming() {
                "server_streaming"
            } else {
                "unary"
            };
            out.insert(format!(
                "rpc {}.{} {} {} {kind}",
                s.name(),
                m.name(),
                m.input_type(),
                m.output_type()
            ));
        }
    }
    out
}

#[test]
fn every_upstream_field_enum_value_and_rpc_matches() {
    let ours = ours();
    let upstream: Vec<&str> = include_str!("upstream_fields.txt")
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        upstream.len() > 500,
        "table looks truncated: {} lines",
        upstream.len()
    );
    let missing: Vec<_> = upstream.iter().filter(|l| !ours.contains(**l)).collect();
    assert!(
        missing.is_empty(),
        "not wire-compatible with upstream; missing or different:\n{missing:#?}"
    );
}

#[test]
fn all_41_rpcs_are_defined() {
    let rpcs: Vec<_> = ours()
        .into_iter()
        .filter(|l| l.starts_with("rpc "))
        .collect();
    assert_eq!(rpcs.len(), 41, "{rpcs:#?}");
    let streaming = rpcs
        .iter()
        .filter(|l| l.ends_with("server_streaming"))
        .count();
    assert_eq!(
        streaming, 7,
        "GetContainerEvents and the six Stream* RPCs stream"
    );
}
