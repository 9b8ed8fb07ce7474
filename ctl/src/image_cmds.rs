//! Image verbs, as crictl has them: pull, images, inspecti, rmi, imagefsinfo.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Subcommand;
use crust_ctl::output::{self, Format};
use crust_proto::runtime::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};
use serde_json::{Map, Value, json};
use tonic::{Code, transport::Channel};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry; prints its id.
    Pull {
        /// The image reference (`busybox`, `registry:5000/ns/name:tag`, `name@sha256:...`).
        image: String,
        /// Registry credentials as `USERNAME[:PASSWORD]` (asked for on stdin if the
        /// password is missing).
        #[arg(long, conflicts_with = "auth")]
        creds: Option<String>,
        /// Registry credentials as base64 of `USERNAME:PASSWORD`.
        #[arg(long)]
        auth: Option<String>,
        /// Give up after this long (0 = no limit, the default).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        pull_timeout: Duration,
        /// Progress on stderr: bars on a terminal (auto), a line per finished layer
        /// (plain), or none. Needs crust's progress service; other runtimes pull
        /// without progress.
        #[arg(long, value_enum, default_value = "auto")]
        progress: crate::pull_progress::ProgressMode,
    },
    /// List images.
    Images {
        /// Only this image (id, tag or digest).
        image: Option<String>,
        /// Only print image ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show digests.
        #[arg(long)]
        digests: bool,
        /// Show every field of each image.
        #[arg(short, long)]
        verbose: bool,
        /// Don't truncate ids.
        #[arg(long)]
        no_trunc: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Show one or more images' status and config.
    Inspecti {
        #[arg(required = true)]
        images: Vec<String>,
        /// Output format (json or yaml).
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
        /// Only the status, without the image config.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove one or more images.
    Rmi {
        /// Images (id, tag or digest).
        images: Vec<String>,
        /// Remove every image.
        #[arg(short, long)]
        all: bool,
        /// Remove every image no container uses.
        #[arg(long)]
        prune: bool,
    },
    /// Show the image filesystem's usage.
    Imagefsinfo {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// Runs an image verb. `endpoint` is needed because a pull takes longer than the
/// per-call `--timeout`, so it opens its own channel.
pub async fn run(cmd: ImageCommand, channel: Channel, endpoint: &str) -> anyhow::Result<String> {
    let mut client = crust_ctl::image_client(channel.clone());
    match cmd {
        ImageCommand::Pull {
            image,
            creds,
            auth,
            pull_timeout,
            progress,
        } => {
            let auth = auth_config(creds.as_deref(), auth.as_deref())?;
            // A day stands for "no limit": tonic needs a finite timeout.
            let limit = if pull_timeout.is_zero() {
                Duration::from_secs(86_400)
            } else {
                pull_timeout
            };
            let long = crust_ctl::connect(endpoint, limit).await?;
            let image_ref = crate::pull_progress::pull(
                long,
                PullImageRequest {
                    image: spec(&image),
                    auth,
                    sandbox_config: None,
                },
                progress,
                (!pull_timeout.is_zero()).then_some(pull_timeout),
            )
            .await?;
            Ok(format!("Image is up to date for {image_ref}\n"))
        }
        ImageCommand::Images {
            image,
            quiet,
            digests,
            verbose,
            no_trunc,
            output: format,
        } => {
            let filter = image.as_deref().map(|i| ImageFilter { image: spec(i) });
            let mut images = client
                .list_images(ListImagesRequest { filter })
                .await
                .context("ListImages")?
                .into_inner()
                .images;
            images.sort_by_key(first_name);
            Ok(match format {
                Format::Json | Format::Yaml | Format::GoTemplate => {
                    output::render(&json!({ "images": images }), format)?
                }
                Format::Table if quiet => images.iter().map(|i| format!("{}\n", i.id)).collect(),
                Format::Table if verbose => images.iter().map(verbose_text).collect(),
                Format::Table => images_table(&images, digests, no_trunc),
            })
        }
        ImageCommand::Inspecti {
            images,
            output: format,
            quiet,
        } => {
            let mut out = String::new();
            for image in images {
                let resp = client
                    .image_status(ImageStatusRequest {
                        image: spec(&image),
                        verbose: !quiet,
                    })
                    .await
                    .with_context(|| format!("ImageStatus {image:?}"))?
                    .into_inner();
                let Some(status) = resp.image else {
                    bail!("no such image {image:?} present")
                };
                let mut doc = Map::new();
                doc.insert("status".into(), serde_json::to_value(&status)?);
                if !quiet {
                    let mut info = Map::new();
                    for (key, raw) in &resp.info {
                        // crictl merges the runtime's verbose JSON into `info`.
                        match serde_json::from_str::<Value>(raw) {
                            Ok(Value::Object(fields)) if key == "info" => info.extend(fields),
                            Ok(v) => {
                                info.insert(key.clone(), v);
                            }
                            Err(_) => {
                                info.insert(key.clone(), Value::String(raw.clone()));
                            }
                        }
                    }
                    doc.insert("info".into(), Value::Object(info));
                }
                out.push_str(&output::render(&Value::Object(doc), format)?);
            }
            Ok(out)
        }
        ImageCommand::Rmi { images, all, prune } => {
            let targets: Vec<Image> = if all || prune {
                let listed = client
                    .list_images(ListImagesRequest::default())
                    .await
                    .context("ListImages")?
                    .into_inner()
                    .images;
                if prune {
                    let used = images_in_use(channel).await?;
                    listed
                        .into_iter()
                        .filter(|i| !used.contains(&i.id))
                        .collect()
                } else {
                    listed
                }
            } else {
                if images.is_empty() {
                    bail!("name the images to remove, or use --all or --prune");
                }
                let mut found = Vec::new();
                for name in &images {
                    let status = client
                        .image_status(ImageStatusRequest {
                            image: spec(name),
                            verbose: false,
                        })
                        .await?
                        .into_inner();
                    match status.image {
                        // Remove by the name given, so a tag only untags.
                        Some(_) => found.push(Image {
                            id: name.clone(),
                            ..Default::default()
                        }),
                        None => bail!("no such image {name:?}"),
                    }
                }
                found
            };
            let mut out = String::new();
            for image in targets {
                client
                    .remove_image(RemoveImageRequest {
                        image: spec(&image.id),
                    })
                    .await
                    .with_context(|| format!("remove {}", image.id))?;
                let names = if image.repo_tags.is_empty() {
                    vec![image.id.clone()]
                } else {
                    image.repo_tags.clone()
                };
                for name in names {
                    out.push_str(&format!("Deleted: {name}\n"));
                }
            }
            Ok(out)
        }
        ImageCommand::Imagefsinfo { output: format } => {
            let resp = client
                .image_fs_info(ImageFsInfoRequest {})
                .await
                .context("ImageFsInfo")?
                .into_inner();
            let value = json!({ "status": resp });
            Ok(match format {
                Format::Table => {
                    let mut out = format!("{:<40} {:>12} {:>12}\n", "MOUNTPOINT", "USED", "INODES");
                    for fs in &resp.image_filesystems {
                        out.push_str(&format!(
                            "{:<40} {:>12} {:>12}\n",
                            fs.fs_id
                                .as_ref()
                                .map(|f| f.mountpoint.as_str())
                                .unwrap_or(""),
                            human_size(fs.used_bytes.map(|v| v.value).unwrap_or(0)),
                            fs.inodes_used.map(|v| v.value).unwrap_or(0)
                        ));
                    }
                    out
                }
                _ => output::render(&value, format)?,
            })
        }
    }
}

/// Image ids used by containers. A runtime without container support yet answers
/// UNIMPLEMENTED: then no image is in use.
async fn images_in_use(channel: Channel) -> anyhow::Result<Vec<String>> {
    let mut runtime = crust_ctl::runtime_client(channel);
    match runtime
        .list_containers(ListContainersRequest::default())
        .await
    {
        Ok(resp) => Ok(resp
            .into_inner()
            .containers
            .into_iter()
            .flat_map(|c| [c.image_ref, c.image_id])
            .collect()),
        Err(status) if status.code() == Code::Unimplemented => Ok(Vec::new()),
        Err(status) => Err(status).context("ListContainers"),
    }
}

/// `--creds user[:pass]` or `--auth base64`, as crictl takes them.
fn auth_config(creds: Option<&str>, auth: Option<&str>) -> anyhow::Result<Option<AuthConfig>> {
    if let Some(auth) = auth {
        base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .context("--auth must be base64 of USERNAME:PASSWORD")?;
        return Ok(Some(AuthConfig {
            auth: auth.trim().to_string(),
            ..Default::default()
        }));
    }
    let Some(creds) = creds else { return Ok(None) };
    let (username, password) = match creds.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => {
            eprint!("Password: ");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("read password")?;
            (
                creds.to_string(),
                line.trim_end_matches(['\r', '\n']).to_string(),
            )
        }
    };
    if username.is_empty() {
        bail!("--creds needs a username");
    }
    Ok(Some(AuthConfig {
        username,
        password,
        ..Default::default()
    }))
}

fn first_name(i: &Image) -> String {
    i.repo_tags
        .first()
        .or(i.repo_digests.first())
        .cloned()
        .unwrap_or_else(|| i.id.clone())
}

/// `repo:tag` -> (`repo`, `tag`); the tag follows the last ':' after the last '/'.
fn split_tag(tag: &str) -> (&str, &str) {
    match tag.rfind(':') {
        Some(i) if !tag[i..].contains('/') => (&tag[..i], &tag[i + 1..]),
        _ => (tag, "<none>"),
    }
}

fn truncate_id(id: &str, no_trunc: bool) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if no_trunc {
        id.to_string()
    } else {
        hex.chars().take(13).collect()
    }
}

/// crictl's `images` table: one row per tag (or one `<none>` row).
fn images_table(images: &[Image], digests: bool, no_trunc: bool) -> String {
    let mut rows = vec![if digests {
        vec![
            "IMAGE".to_string(),
            "TAG".into(),
            "DIGEST".into(),
            "IMAGE ID".into(),
            "SIZE".into(),
        ]
    } else {
        vec![
            "IMAGE".to_string(),
            "TAG".into(),
            "IMAGE ID".into(),
            "SIZE".into(),
        ]
    }];
    for image in images {
        let digest = image
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map(|(_, d)| truncate_id(d, no_trunc))
            .unwrap_or_default();
        let digest_repo = image
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map(|(r, _)| r.to_string());
        let names: Vec<(String, String)> = if image.repo_tags.is_empty() {
            vec![(
                digest_repo.unwrap_or_else(|| "<none>".into()),
                "<none>".into(),
            )]
        } else {
            image
                .repo_tags
                .iter()
                .map(|t| split_tag(t))
                .map(|(r, t)| (r.to_string(), t.to_string()))
                .collect()
        };
        for (repo, tag) in names {
            let mut row = vec![repo, tag];
            if digests {
                row.push(digest.clone());
            }
            row.push(truncate_id(&image.id, no_trunc));
            row.push(human_size(image.size));
            rows.push(row);
        }
    }
    output::table(&rows)
}

fn verbose_text(i: &Image) -> String {
    let mut out = format!("ID: {}\n", i.id);
    out.push_str(&format!("RepoTags: {}\n", i.repo_tags.join(" ")));
    out.push_str(&format!("RepoDigests: {}\n", i.repo_digests.join(" ")));
    out.push_str(&format!("Size: {}\n", i.size));
    if let Some(uid) = &i.uid {
        out.push_str(&format!("Uid: {}\n", uid.value));
    }
    if !i.username.is_empty() {
        out.push_str(&format!("Username: {}\n", i.username));
    }
    out.push_str(&format!("Pinned: {}\n\n", i.pinned));
    out
}

/// Sizes as crictl prints them (decimal units, 3 significant digits).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_crictl() {
        for (bytes, want) in [
            (0, "0.00B"),
            (999, "999B"),
            (1_234_567, "1.23MB"),
            (45_600_000, "45.6MB"),
            (2_000_000_000, "2.00GB"),
        ] {
            assert_eq!(human_size(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn table_rows_per_tag_and_untagged() {
        let images = vec![
            Image {
                id: format!("sha256:{}", "ab".repeat(32)),
                repo_tags: vec![
                    "127.0.0.1:5000/a/b:v1".into(),
                    "127.0.0.1:5000/a/b:v2".into(),
                ],
                repo_digests: vec![format!("127.0.0.1:5000/a/b@sha256:{}", "cd".repeat(32))],
                size: 1_500_000,
                ..Default::default()
            },
            Image {
                id: format!("sha256:{}", "ef".repeat(32)),
                size: 10,
                ..Default::default()
            },
        ];
        let table = images_table(&images, true, false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("IMAGE") && lines[0].contains("DIGEST"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("127.0.0.1:5000/a/b")
                && lines[1].contains("v1")
                && lines[1].contains("abababababab"),
            "{table}"
        );
        assert!(
            lines[1].contains("cdcdcdcdcdcdc") && lines[1].contains("1.50MB"),
            "{table}"
        );
        assert!(lines[2].contains("v2"));
        assert!(lines[3].starts_with("<none>"), "{table}");
    }

    #[test]
    fn creds_and_auth() {
        let a = auth_config(Some("u:p:q"), None).unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p:q"));
        let b64 = base64::engine::general_purpose::STANDARD.encode("u:p");
        assert_eq!(auth_config(None, Some(&b64)).unwrap().unwrap().auth, b64);
        assert!(auth_config(None, Some("!!")).is_err());
        assert!(auth_config(None, None).unwrap().is_none());
    }
}
