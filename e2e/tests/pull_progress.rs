//! crust's own `crust.v1.Images/PullImageProgress` (not CRI) end to end: crustd as a
//! process pulling from a real registry on loopback (Debian `docker-registry`) or the
//! stalling fake one, driven by the generated client and by `crustctl pull`.

use std::{path::Path, time::Duration};

use crust_e2e::{
    Crustd, Sandbox,
    containerd::{Containerd, ContainerdOptions},
    crustctl,
    image_builder::{Compression, Image, LayerBuilder, host_arch},
    registry::{FakeRegistry, Registry, free_port},
};
use crust_proto::{
    crust::v1::{LayerPhase, PullImageProgressResponse, images_client::ImagesClient},
    runtime::v1::{ImageSpec, ImageStatusRequest, PullImageRequest},
};
use serde_json::{Value, json};
use tonic::{Code, Status, Streaming, transport::Channel};

const APPLETS: &[&str] = &["sh", "ls", "cat", "echo", "sleep", "true"];

fn request(image: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Bytes that do not compress: layers big enough to take several messages' worth.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// busybox (gzip) and 4 MiB of noise (zstd): two layers.
fn two_layer_image(seed: u64) -> Image {
    let mut base = LayerBuilder::new();
    base.busybox(APPLETS).unwrap();
    let mut data = LayerBuilder::new();
    data.dir("data", 0o755)
        .file("data/noise", &noise(4 << 20, seed), 0o644);
    Image::build(
        vec![
            base.finish(Compression::Gzip),
            data.finish(Compression::Zstd),
        ],
        host_arch(),
        json!({"Cmd": ["sh"]}),
    )
}

async fn started(sb: &Sandbox, extra: &str) -> Crustd {
    sb.write_config(extra).unwrap();
    let mut d = sb.start().unwrap();
    d.wait_ready().await.unwrap();
    d
}

async fn client(d: &Crustd) -> ImagesClient<Channel> {
    ImagesClient::new(d.channel().await.unwrap())
}

async fn open(
    d: &Crustd,
    req: tonic::Request<PullImageRequest>,
) -> Result<Streaming<PullImageProgressResponse>, Status> {
    Ok(client(d).await.pull_image_progress(req).await?.into_inner())
}

/// Every message of one PullImageProgress call, or the status it ended with (at the
/// call or in the stream: a client must handle both).
async fn progress_pull(d: &Crustd, image: &str) -> Result<Vec<PullImageProgressResponse>, Status> {
    let mut stream = open(d, tonic::Request::new(request(image))).await?;
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await? {
        messages.push(m);
    }
    Ok(messages)
}

async fn cri_pull(d: &Crustd, image: &str) -> Result<String, Status> {
    d.image()
        .await
        .unwrap()
        .pull_image(request(image))
        .await
        .map(|r| r.into_inner().image_ref)
}

/// The manifest's layers as (digest, media type, size).
fn manifest_layers(image: &Image) -> Vec<(String, String, u64)> {
    let m: Value = serde_json::from_slice(&image.manifest).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["mediaType"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Checks what every snapshot must satisfy and returns the final message.
fn check_stream(
    messages: &[PullImageProgressResponse],
    image: &Image,
    final_phase: LayerPhase,
) -> PullImageProgressResponse {
    let want = manifest_layers(image);
    let last = messages.last().expect("at least the final message").clone();
    for (i, m) in messages.iter().enumerate() {
        let is_last = i + 1 == messages.len();
        assert_eq!(
            m.image_ref.is_empty(),
            !is_last,
            "message {i}: only the last carries image_ref: {m:?}"
        );
        if m.layers.is_empty() {
            continue;
        }
        let got: Vec<(String, String, u64)> = m
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.media_type.clone(), l.size))
            .collect();
        assert_eq!(got, want, "message {i}: the manifest's layers, in order");
        for l in &m.layers {
            assert!(l.bytes_done <= l.size, "message {i}: {l:?}");
        }
    }
    for (n, (digest, _, size)) in want.iter().enumerate() {
        let done: Vec<u64> = messages
            .iter()
            .filter_map(|m| m.layers.get(n))
            .map(|l| l.bytes_done)
            .collect();
        assert!(
            done.windows(2).all(|w| w[0] <= w[1]),
            "layer {digest}: bytes_done never decreases: {done:?}"
        );
        let end = &last.layers[n];
        assert_eq!(end.bytes_done, *size, "layer {digest} ends complete");
        assert_eq!(end.phase(), final_phase, "layer {digest}: {end:?}");
    }
    last
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded by a count of polls, never asserted on time) until the image
/// store's temp directory is empty: a dropped pull's leftovers go away.
async fn assert_tmp_drains(sb: &Sandbox, context: &str) {
    let tmp = sb.root().join("image/tmp");
    for _ in 0..500 {
        if entries(&tmp).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{context}: {} still holds {:?}",
        tmp.display(),
        entries(&tmp)
    );
}

#[tokio::test]
async fn stream_reports_each_layer_then_the_image_ref_then_already_present() {
    let registry = Registry::start().await.unwrap();
    let image = two_layer_image(1);
    registry
        .push_image("progress/app", &["v1"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/progress/app:v1", registry.host());

    let messages = progress_pull(&d, &name).await.expect("pull with progress");
    let last = check_stream(&messages, &image, LayerPhase::Done);
    let status = d
        .image()
        .await
        .unwrap()
        .image_status(ImageStatusRequest {
            image: request(&name).image,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("the pulled image is present");
    assert_eq!(
        last.image_ref, status.id,
        "image_ref is what ImageStatus names"
    );
    assert_eq!(last.image_ref, image.id());
    assert_eq!(
        cri_pull(&d, &name).await.unwrap(),
        last.image_ref,
        "the same value PullImage returns"
    );

    let again = progress_pull(&d, &name).await.expect("second pull");
    let last = check_stream(&again, &image, LayerPhase::AlreadyPresent);
    assert_eq!(last.image_ref, image.id());
    assert!(
        again
            .iter()
            .flat_map(|m| &m.layers)
            .all(|l| l.phase() != LayerPhase::Downloading),
        "nothing is downloaded the second time: {again:?}"
    );
}

#[tokio::test]
async fn errors_end_the_stream_with_the_status_pull_image_gives() {
    let registry = Registry::start().await.unwrap();
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let closed = free_port().unwrap();
    let host = registry.host();
    let cases = [
        ("Upper/Case:tag".to_string(), Code::InvalidArgument),
        (format!("{host}/progress/absent:v1"), Code::NotFound),
        (
            format!("127.0.0.1:{closed}/progress/x:v1"),
            Code::Unavailable,
        ),
    ];
    for (name, code) in cases {
        let err = progress_pull(&d, &name).await.unwrap_err();
        let cri = cri_pull(&d, &name).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert_eq!(err.code(), cri.code(), "{name}: the code PullImage gives");
        assert_eq!(err.message(), cri.message(), "{name}: and its message");
    }
    let err = progress_pull(&d, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "empty image: {err:?}");
    assert!(err.message().contains("image.image"), "{}", err.message());
}

/// A registry that stops sending half-way through the big layer.
async fn stalling(image: &Image) -> FakeRegistry {
    let half = image.layers[1].blob.len() / 2;
    FakeRegistry::start(FakeRegistry::routes_for(
        "stall/app",
        "v1",
        image,
        Some((1, half)),
    ))
    .await
    .unwrap()
}

/// Reads until layer 1 shows `min_bytes` downloaded; returns the last message.
async fn until_downloading(
    stream: &mut Streaming<PullImageProgressResponse>,
    min_bytes: u64,
) -> PullImageProgressResponse {
    loop {
        let m = stream
            .message()
            .await
            .expect("progress while stalled")
            .expect("the stream goes on while the pull stalls");
        if m.layers
            .get(1)
            .is_some_and(|l| l.phase() == LayerPhase::Downloading && l.bytes_done >= min_bytes)
        {
            return m;
        }
    }
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_pull_and_a_deadline_is_deadline_exceeded() {
    let image = two_layer_image(2);
    let fake = stalling(&image).await;
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/stall/app:v1", fake.host());

    let mut stream = open(&d, tonic::Request::new(request(&name))).await.unwrap();
    until_downloading(&mut stream, 1).await;
    assert!(
        !entries(&sb.root().join("image/tmp")).is_empty(),
        "a fetch is in progress"
    );
    drop(stream);
    assert_tmp_drains(&sb, "after the client dropped the stream").await;

    let mut req = tonic::Request::new(request(&name));
    req.set_timeout(Duration::from_secs(2));
    let mut stream = open(&d, req).await.unwrap();
    let err = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a stalled pull cannot finish"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_tmp_drains(&sb, "after the deadline").await;
    let images = d
        .image()
        .await
        .unwrap()
        .list_images(crust_proto::runtime::v1::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        images.is_empty(),
        "no image from cancelled pulls: {images:?}"
    );
}

#[tokio::test]
async fn a_second_pull_of_the_same_image_shows_the_first_ones_download() {
    let image = two_layer_image(3);
    let fake = stalling(&image).await;
    let sb = Sandbox::new().unwrap();
    let d = started(&sb, "").await;
    let name = format!("{}/stall/app:v1", fake.host());
    let half = (image.layers[1].blob.len() / 2) as u64;

    // The CRI pull (kubelet's, say) starts the download and stalls half-way.
    let cri = {
        let mut c = d.image().await.unwrap();
        let req = request(&name);
        tokio::spawn(async move { c.pull_image(req).await })
    };
    let mut first = open(&d, tonic::Request::new(request(&name))).await.unwrap();
    until_downloading(&mut first, half).await;
    drop(first);
    // A fresh stream joins the download in flight: it sees the bytes already in,
    // which it did not fetch itself (the fake registry sends no more).
    let mut second = open(&d, tonic::Request::new(request(&name))).await.unwrap();
    let m = until_downloading(&mut second, half).await;
    assert_eq!(
        m.layers[1].bytes_done, half,
        "the in-flight download's bytes: {m:?}"
    );
    // The first stream's fetch, if it was the one holding the layer, is dropped and
    // its temp directory drains; what stays is one live fetch, not one per pull.
    let tmp = sb.root().join("image/tmp");
    let mut live = entries(&tmp);
    for _ in 0..500 {
        if live.len() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        live = entries(&tmp);
    }
    assert_eq!(
        live.len(),
        1,
        "one fetch of the layer, shared by both pulls: {live:?}"
    );
    drop(second);
    cri.abort();
    let _ = cri.await;
    assert_tmp_drains(&sb, "after every pull was dropped").await;
}

#[tokio::test]
async fn crustctl_pull_plain_prints_a_line_per_layer_then_the_usual_output() {
    let registry = Registry::start().await.unwrap();
    let image = two_layer_image(4);
    registry
        .push_image("progress/ctl", &["v1"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let _d = started(&sb, "").await;
    let ep = sb.endpoint();
    let name = format!("{}/progress/ctl:v1", registry.host());
    let run = |args: &[&str]| {
        let out = crustctl(&ep, args).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "crustctl {args:?}: {stderr}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    };
    let short = |digest: &str| digest["sha256:".len()..][..12].to_string();

    let (stdout, stderr) = run(&["pull", "--progress=plain", &name]);
    assert_eq!(stdout, format!("Image is up to date for {}\n", image.id()));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        image.layers.len(),
        "one line per layer: {stderr}"
    );
    for layer in &image.layers {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&short(&layer.digest())))
            .unwrap_or_else(|| panic!("a line for {}: {stderr}", layer.digest()));
        assert!(
            line.contains("pulled") && line.contains(&format!("{} bytes", layer.blob.len())),
            "{line}"
        );
    }

    let (stdout, stderr) = run(&["pull", "--progress=plain", &name]);
    assert_eq!(stdout, format!("Image is up to date for {}\n", image.id()));
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("already present"))
            .count(),
        image.layers.len(),
        "{stderr}"
    );

    // Without a terminal, auto is plain; none prints only the result.
    let (_, stderr) = run(&["pull", &name]);
    assert_eq!(stderr.lines().count(), image.layers.len(), "auto: {stderr}");
    let (stdout, stderr) = run(&["pull", "--progress=none", &name]);
    assert_eq!(stdout, format!("Image is up to date for {}\n", image.id()));
    assert_eq!(stderr, "", "none");
}

#[tokio::test]
async fn crustctl_pull_against_containerd_falls_back_to_cri_pull_image_silently() {
    let registry = Registry::start().await.unwrap();
    let image = two_layer_image(5);
    registry
        .push_image("progress/ctrd", &["v1"], &image)
        .await
        .unwrap();
    let mut ctrd = Containerd::start(&ContainerdOptions {
        registry_host: registry.host(),
        ..Default::default()
    })
    .unwrap();
    ctrd.wait_ready().await.unwrap();
    let name = format!("{}/progress/ctrd:v1", registry.host());
    let out = crustctl(&ctrd.endpoint(), &["pull", "--progress=plain", &name]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\ncontainerd:\n{}",
        ctrd.log()
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("Image is up to date for {}\n", image.id()),
        "containerd's PullImage answer, printed as always"
    );
    assert_eq!(
        stderr, "",
        "no progress and no complaint about the missing service"
    );
}

#[tokio::test]
async fn crustctl_pull_on_a_terminal_draws_a_bar_per_layer_and_a_total() {
    let registry = Registry::start().await.unwrap();
    let image = two_layer_image(6);
    registry
        .push_image("progress/tty", &["v1"], &image)
        .await
        .unwrap();
    let sb = Sandbox::new().unwrap();
    let _d = started(&sb, "").await;
    let name = format!("{}/progress/tty:v1", registry.host());
    // util-linux `script` runs crustctl on a pseudo-terminal and copies what it drew.
    let command = format!(
        "{} -r {} pull {name}",
        crust_e2e::binary("crustctl").display(),
        sb.endpoint()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("COLUMNS", "120")
        .env("LINES", "40")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let drawn = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{drawn}");
    for layer in &image.layers {
        let short = &layer.digest()["sha256:".len()..][..12];
        assert!(drawn.contains(short), "a bar for {short}: {drawn}");
    }
    assert!(drawn.contains("total"), "{drawn}");
    assert!(
        drawn.contains("2/2 layers"),
        "the total counts finished layers: {drawn}"
    );
    assert!(
        drawn.contains(&format!("Image is up to date for {}", image.id())),
        "{drawn}"
    );
}
