//! Builds test images without a container engine: reproducible layer tars (entries in
//! the order given, mtime 0, uid/gid 0 unless set, gzip without name or time), OCI
//! configs, manifests and indexes. The same inputs give the same bytes, hence the same
//! digests, so tests can assert on them.

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One layer tar under construction.
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .expect("append dir");
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .expect("append file");
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o755, 0);
        self.builder
            .append_link(&mut h, path, target)
            .expect("append hard link");
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .expect("append symlink");
        self
    }

    /// A character device node `major:minor` (for tests of images that carry them).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Char, mode, 0);
        h.set_device_major(major).expect("ustar device major");
        h.set_device_minor(minor).expect("ustar device minor");
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .expect("append char device");
        self
    }

    /// A named pipe.
    pub fn fifo(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Fifo, mode, 0);
        self.builder
            .append_data(&mut h, path, std::io::empty())
            .expect("append fifo");
        self
    }

    /// `.wh.<name>` next to `path`'s file name: deletes `path` from lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", 0o644)
    }

    /// Marks `dir` opaque: lower layers' content of it is hidden.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// `/bin/busybox` from the host (Debian busybox-static) plus hard links for
    /// `applets`, as upstream busybox images do.
    pub fn busybox(&mut self, applets: &[&str]) -> anyhow::Result<&mut Self> {
        let bin = std::fs::read("/bin/busybox")
            .context("read /bin/busybox (apt-get install busybox-static)")?;
        self.dir("bin", 0o755).file("bin/busybox", &bin, 0o755);
        for applet in applets {
            self.hardlink(&format!("bin/{applet}"), "bin/busybox");
        }
        Ok(self)
    }

    pub fn finish(self, compression: Compression) -> Layer {
        let tar = self.builder.into_inner().expect("finish tar");
        Layer::from_tar(tar, compression)
    }
}

/// A finished layer: the uncompressed tar and the bytes pushed.
#[derive(Debug, Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: &'static str,
}

impl Layer {
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
        let (blob, media_type) = match compression {
            Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                // GzEncoder writes mtime 0 and no file name: `gzip -n`.
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&tar).expect("gzip");
                (
                    gz.finish().expect("gzip"),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(&tar[..], 3).expect("zstd"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        Layer {
            tar,
            blob,
            media_type,
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.blob)
    }

    pub fn diff_id(&self) -> String {
        sha256(&self.tar)
    }
}

/// A complete single-platform image.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: &'static str,
}

impl Image {
    /// Builds config and manifest for `layers` (bottom first). `container_config` is
    /// the config's `config` object (`User`, `Cmd`, `Env`...).
    pub fn build(layers: Vec<Layer>, architecture: &str, container_config: Value) -> Image {
        let config = json!({
            "architecture": architecture,
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(Layer::diff_id).collect::<Vec<_>>()},
        });
        let config = serde_json::to_vec(&config).expect("config json");
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest(), "size": l.blob.len()})).collect::<Vec<_>>(),
            "annotations": {"org.opencontainers.image.title": "crust-test"},
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest json");
        Image {
            layers,
            config,
            manifest,
            manifest_media_type: OCI_MANIFEST,
        }
    }

    /// The same image as a Docker v2 schema 2 manifest (Docker media types; gzip or
    /// uncompressed layers only, as Docker defines no zstd type).
    pub fn build_docker(layers: Vec<Layer>, architecture: &str, container_config: Value) -> Image {
        let oci = Image::build(layers, architecture, container_config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha256(&oci.config), "size": oci.config.len()},
            "layers": oci.layers.iter().map(|l| {
                let media_type = if l.media_type.ends_with("gzip") {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                } else {
                    "application/vnd.docker.image.rootfs.diff.tar"
                };
                json!({"mediaType": media_type, "digest": l.digest(), "size": l.blob.len()})
            }).collect::<Vec<_>>(),
        });
        Image {
            manifest: serde_json::to_vec(&manifest).expect("manifest json"),
            manifest_media_type: DOCKER_MANIFEST,
            ..oci
        }
    }

    /// The image id crust must report: the config digest.
    pub fn id(&self) -> String {
        sha256(&self.config)
    }

    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn size(&self) -> u64 {
        (self.config.len() + self.layers.iter().map(|l| l.blob.len()).sum::<usize>()) as u64
    }
}

/// An OCI index over `(image, architecture, variant)`.
pub fn index(entries: &[(&Image, &str, Option<&str>)]) -> Vec<u8> {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(image, arch, variant)| {
            let mut platform = json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            json!({
                "mediaType": image.manifest_media_type,
                "digest": image.manifest_digest(),
                "size": image.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        .expect("index json")
}

/// The node's architecture in registry (GOARCH) naming.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
