//! `pull` with progress: crust's own `crust.v1.Images/PullImageProgress` (not CRI)
//! where the runtime serves it, the CRI `PullImage` where it answers UNIMPLEMENTED
//! (containerd, CRI-O), silently. With a terminal on stderr, one bar per layer and a
//! total (indicatif); without one, a line per layer as it finishes. Progress goes to
//! stderr, so stdout stays what `pull` always printed.

use std::{collections::HashSet, io::IsTerminal, time::Duration};

use anyhow::Context;
use crust_proto::{
    MAX_MESSAGE_SIZE,
    crust::v1::{LayerPhase, LayerProgress, images_client::ImagesClient},
    runtime::v1::PullImageRequest,
};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::{Code, Status, transport::Channel};

/// How `pull` shows progress (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, else plain.
    Auto,
    /// A line per layer on stderr when it finishes.
    Plain,
    /// Nothing but the result (the CRI PullImage, as crictl).
    None,
}

/// Pulls as `req` asks and returns the image ref (PullImage's `image_ref`).
/// `deadline` bounds the whole pull, stream included (None: no limit).
pub async fn pull(
    channel: Channel,
    req: PullImageRequest,
    mode: ProgressMode,
    deadline: Option<Duration>,
) -> anyhow::Result<String> {
    let work = pull_unbounded(channel, req, mode, deadline);
    match deadline {
        None => work.await,
        // The runtime ends the stream at the deadline too (grpc-timeout); this bounds
        // a runtime that does not.
        Some(limit) => tokio::time::timeout(limit + Duration::from_secs(1), work)
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::Error::new(Status::deadline_exceeded(
                    "context deadline exceeded",
                )))
            }),
    }
}

async fn pull_unbounded(
    channel: Channel,
    req: PullImageRequest,
    mode: ProgressMode,
    deadline: Option<Duration>,
) -> anyhow::Result<String> {
    let name = req
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    let context = || format!("pull image {name:?}");
    let with_deadline = |req: PullImageRequest| {
        let mut r = tonic::Request::new(req);
        if let Some(limit) = deadline {
            r.set_timeout(limit);
        }
        r
    };
    let cri = |channel: Channel, req: PullImageRequest| async move {
        crust_ctl::image_client(channel)
            .pull_image(with_deadline(req))
            .await
            .map(|r| r.into_inner().image_ref)
            .with_context(context)
    };
    if mode == ProgressMode::None {
        return cri(channel, req).await;
    }
    let mut client = ImagesClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let mut stream = match client.pull_image_progress(with_deadline(req.clone())).await {
        Ok(r) => r.into_inner(),
        // Not crust (or an older one): the CRI has no progress to show.
        Err(s) if s.code() == Code::Unimplemented => return cri(channel, req).await,
        Err(s) => return Err(anyhow::Error::new(s).context(context())),
    };
    let tty = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
    let mut view: Box<dyn View> = if tty {
        Box::new(Bars::new())
    } else {
        Box::new(Plain::default())
    };
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                view.update(&m.layers);
                if !m.image_ref.is_empty() {
                    view.finish();
                    return Ok(m.image_ref);
                }
            }
            Ok(None) => {
                view.abandon();
                anyhow::bail!(
                    "{}: the runtime ended the progress stream without an image ref",
                    context()
                )
            }
            Err(s) => {
                view.abandon();
                return Err(anyhow::Error::new(s).context(context()));
            }
        }
    }
}

/// Where snapshots are shown.
trait View {
    fn update(&mut self, layers: &[LayerProgress]);
    /// The pull succeeded (after the final update).
    fn finish(&mut self);
    /// The pull failed: stop drawing, leave what was shown.
    fn abandon(&mut self);
}

/// The layer's digest as docker shows it: 12 hex digits, no algorithm.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// The line `plain` prints for a finished layer; None while it is not finished.
pub fn finished_line(l: &LayerProgress) -> Option<String> {
    let what = match l.phase() {
        LayerPhase::Done => "pulled",
        LayerPhase::AlreadyPresent => "already present",
        _ => return None,
    };
    Some(format!(
        "{}: {what}, {} bytes ({})",
        short_digest(&l.digest),
        l.size,
        HumanBytes(l.size)
    ))
}

/// No terminal: one line per layer, once, when it finishes.
#[derive(Default)]
struct Plain {
    printed: HashSet<String>,
}

impl Plain {
    /// The lines `layers` adds to what was printed before.
    fn lines(&mut self, layers: &[LayerProgress]) -> Vec<String> {
        layers
            .iter()
            .filter_map(|l| {
                let line = finished_line(l)?;
                self.printed.insert(l.digest.clone()).then_some(line)
            })
            .collect()
    }
}

impl View for Plain {
    fn update(&mut self, layers: &[LayerProgress]) {
        for line in self.lines(layers) {
            eprintln!("{line}");
        }
    }
    fn finish(&mut self) {}
    fn abandon(&mut self) {}
}

/// A terminal: a bar per layer (short digest, bytes/total, rate, phase) and a total
/// of what is being downloaded (layers already present are left out of it).
struct Bars {
    multi: MultiProgress,
    layers: Vec<(String, ProgressBar)>,
    total: ProgressBar,
}

/// Short digest (or "total"), bar, bytes/total, rate, phase.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:12} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

fn phase_name(p: LayerPhase) -> &'static str {
    match p {
        LayerPhase::Unspecified | LayerPhase::Waiting => "waiting",
        LayerPhase::Downloading => "downloading",
        LayerPhase::Unpacking => "unpacking",
        LayerPhase::Verifying => "verifying",
        LayerPhase::Done => "done",
        LayerPhase::AlreadyPresent => "already present",
    }
}

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(0));
        // No bar until the sizes are known: an empty total would draw full.
        total.set_style(ProgressStyle::with_template("{prefix:12} {msg}").expect("valid template"));
        total.set_prefix("total");
        total.set_message("resolving");
        Bars {
            multi,
            layers: Vec::new(),
            total,
        }
    }

    fn layer_bar(&self, l: &LayerProgress) -> ProgressBar {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(l.size));
        bar.set_style(bar_style());
        bar.set_prefix(short_digest(&l.digest).to_string());
        bar
    }
}

impl View for Bars {
    fn update(&mut self, layers: &[LayerProgress]) {
        // A new list (a mirror failed part-way): start the bars over.
        if self.layers.len() != layers.len()
            || self
                .layers
                .iter()
                .zip(layers)
                .any(|((d, _), l)| *d != l.digest)
        {
            for (_, bar) in self.layers.drain(..) {
                self.multi.remove(&bar);
            }
            self.layers = layers
                .iter()
                .map(|l| (l.digest.clone(), self.layer_bar(l)))
                .collect();
            if !layers.is_empty() {
                self.total.set_style(bar_style());
            }
        }
        let (mut length, mut done, mut finished) = (0, 0, 0);
        for ((_, bar), l) in self.layers.iter().zip(layers) {
            bar.set_position(l.bytes_done);
            bar.set_message(phase_name(l.phase()));
            if l.phase() != LayerPhase::AlreadyPresent {
                length += l.size;
                done += l.bytes_done;
            }
            finished += usize::from(matches!(
                l.phase(),
                LayerPhase::Done | LayerPhase::AlreadyPresent
            ));
        }
        self.total.set_length(length);
        self.total.set_position(done);
        self.total
            .set_message(format!("{finished}/{} layers", layers.len()));
    }

    fn finish(&mut self) {
        for (_, bar) in &self.layers {
            bar.finish();
        }
        self.total.finish();
    }

    fn abandon(&mut self) {
        for (_, bar) in &self.layers {
            bar.abandon();
        }
        self.total.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(digest: &str, size: u64, phase: LayerPhase) -> LayerProgress {
        LayerProgress {
            digest: digest.into(),
            media_type: String::new(),
            size,
            bytes_done: 0,
            phase: phase.into(),
        }
    }

    #[test]
    fn short_digests() {
        for (digest, want) in [
            ("sha256:0123456789abcdef0123", "0123456789ab"),
            ("sha512:abc", "abc"),
            ("0123456789abcdef", "0123456789ab"),
            ("", ""),
        ] {
            assert_eq!(short_digest(digest), want, "{digest:?}");
        }
    }

    #[test]
    fn plain_prints_each_finished_layer_once() {
        let a = "sha256:aaaaaaaaaaaaaaaa";
        let b = "sha256:bbbbbbbbbbbbbbbb";
        let mut plain = Plain::default();
        let cases: &[(Vec<LayerProgress>, Vec<&str>, &str)] = &[
            (vec![], vec![], "no layers yet"),
            (
                vec![
                    layer(a, 2048, LayerPhase::Downloading),
                    layer(b, 10, LayerPhase::Waiting),
                ],
                vec![],
                "nothing finished",
            ),
            (
                vec![
                    layer(a, 2048, LayerPhase::Done),
                    layer(b, 10, LayerPhase::Verifying),
                ],
                vec!["aaaaaaaaaaaa: pulled, 2048 bytes (2.00 KiB)"],
                "the first finishes",
            ),
            (
                vec![
                    layer(a, 2048, LayerPhase::Done),
                    layer(b, 10, LayerPhase::AlreadyPresent),
                ],
                vec!["bbbbbbbbbbbb: already present, 10 bytes (10 B)"],
                "only the newly finished one",
            ),
            (
                vec![
                    layer(a, 2048, LayerPhase::Done),
                    layer(b, 10, LayerPhase::AlreadyPresent),
                ],
                vec![],
                "the final message repeats nothing",
            ),
        ];
        for (layers, want, why) in cases {
            assert_eq!(plain.lines(layers), *want, "{why}");
        }
    }
}
