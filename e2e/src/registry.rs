//! A real OCI registry on loopback for tests: Debian's `docker-registry` (CNCF
//! distribution) on a free port with temp storage, optionally behind htpasswd auth,
//! killed by PID when dropped. Images are pushed with the registry HTTP API.

use std::{
    fs,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use reqwest::StatusCode;

use crate::image_builder::{Image, sha256};

pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    credentials: Option<(String, String)>,
    http: reqwest::Client,
}

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Registry {
    /// Starts an anonymous registry.
    pub async fn start() -> anyhow::Result<Registry> {
        Self::spawn(None).await
    }

    /// Starts a registry that requires `username`/`password` (bcrypt htpasswd).
    pub async fn start_with_auth(username: &str, password: &str) -> anyhow::Result<Registry> {
        Self::spawn(Some((username.to_string(), password.to_string()))).await
    }

    async fn spawn(credentials: Option<(String, String)>) -> anyhow::Result<Registry> {
        let mut dir = tempfile::Builder::new()
            .prefix("crust-registry-")
            .tempdir_in("/var/tmp")?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage)?;
        let mut auth = String::new();
        if let Some((user, pass)) = &credentials {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .context("run htpasswd (apt-get install apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let file = dir.path().join("htpasswd");
            fs::write(&file, out.stdout)?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: crust-test\n    path: {}\n",
                file.display()
            );
        }
        // Ports are picked per run; retry if another process grabbed ours meanwhile.
        for _ in 0..5 {
            let port = free_port()?;
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                storage.display()
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config)?;
            let log = fs::File::create(dir.path().join(format!("registry-{port}.log")))?;
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn docker-registry (apt-get install docker-registry)")?;
            let mut registry = Registry {
                child: Some(child),
                dir,
                port,
                credentials: credentials.clone(),
                http: reqwest::Client::new(),
            };
            if registry.wait_ready().await? {
                return Ok(registry);
            }
            let _ = registry.child.take().map(|mut c| {
                let _ = c.kill();
                c.wait()
            });
            dir = registry.take_dir();
        }
        bail!("docker-registry did not start on a free port after 5 tries")
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    /// `Ok(true)` when `/v2/` answers; `Ok(false)` when the process exited (port taken).
    async fn wait_ready(&mut self) -> anyhow::Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                tracing_log(&self.log_text());
                let _ = status;
                return Ok(false);
            }
            if let Ok(r) = self.http.get(format!("{}/v2/", self.url())).send().await
                && (r.status() == StatusCode::OK || r.status() == StatusCode::UNAUTHORIZED)
            {
                return Ok(true);
            }
            if Instant::now() > deadline {
                bail!("docker-registry not ready after 20s:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join(format!("registry-{}.log", self.port)))
            .unwrap_or_default()
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Where the registry keeps its data (for tests that inspect or corrupt it).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    /// Uploads a blob (monolithic upload) unless the registry has it.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let digest = sha256(bytes);
        let head = self
            .auth(
                self.http
                    .head(format!("{}/v2/{repo}/blobs/{digest}", self.url())),
            )
            .send()
            .await?;
        if head.status() == StatusCode::OK {
            return Ok(digest);
        }
        let start = self
            .auth(
                self.http
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.url())),
            )
            .send()
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            bail!("start upload to {repo}: {}", start.status());
        }
        let location = start
            .headers()
            .get("location")
            .context("upload location")?
            .to_str()?
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.url())
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .auth(self.http.put(format!("{location}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        if put.status() != StatusCode::CREATED {
            bail!(
                "finish upload of {digest} to {repo}: {} {}",
                put.status(),
                put.text().await.unwrap_or_default()
            );
        }
        Ok(digest)
    }

    /// Uploads a manifest or index under `reference` (a tag or its digest).
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<()> {
        let put = self
            .auth(
                self.http
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.url())),
            )
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        if put.status() != StatusCode::CREATED {
            bail!(
                "push manifest {repo}:{reference}: {} {}",
                put.status(),
                put.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Pushes every blob of `image` and its manifest under each of `tags`.
    pub async fn push_image(&self, repo: &str, tags: &[&str], image: &Image) -> anyhow::Result<()> {
        for layer in &image.layers {
            self.push_blob(repo, &layer.blob).await?;
        }
        self.push_blob(repo, &image.config).await?;
        for tag in tags {
            self.push_manifest(repo, tag, image.manifest_media_type, &image.manifest)
                .await?;
        }
        if tags.is_empty() {
            self.push_manifest(
                repo,
                &image.manifest_digest(),
                image.manifest_media_type,
                &image.manifest,
            )
            .await?;
        }
        Ok(())
    }
}

fn tracing_log(text: &str) {
    eprintln!("docker-registry exited:\n{text}");
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only the process we started, by its PID.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a [`FakeRegistry`] answers one path.
#[derive(Debug, Clone)]
pub struct Route {
    pub content_type: String,
    pub body: Vec<u8>,
    /// Send only this many body bytes, then hold the connection open without sending
    /// more (a registry that stops making progress). `Some(0)` stalls right after the
    /// headers.
    pub stall_after: Option<usize>,
}

/// Bearer-token auth for a [`FakeRegistry`], as Docker Hub and ghcr.io do it: `/v2/`
/// paths want `Authorization: Bearer <ACCESS_TOKEN>` and answer 401 with a challenge
/// naming `/token` on the same server. `/token` hands out the access token for Basic
/// `username:password` (GET) or the refresh token (POST, OAuth2 refresh-token grant),
/// an insufficient token to anonymous callers, and 401 for wrong credentials.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    pub username: String,
    pub password: String,
    pub refresh_token: String,
}

pub const ACCESS_TOKEN: &str = "fake-access-token";

/// A minimal HTTP/1.1 registry that serves fixed routes and can stall mid-body or
/// demand bearer tokens: for progress-timeout, crash-mid-pull and token-flow tests.
/// Unknown paths answer 404. Stops when dropped.
pub struct FakeRegistry {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Request> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn response(status: &str, extra_headers: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 {status}\r\n{extra_headers}content-type: {content_type}\r\ncontent-length: {}\r\n\r\n", body.len())
            .into_bytes();
    out.extend_from_slice(body);
    out
}

impl FakeRegistry {
    pub async fn start(
        routes: std::collections::HashMap<String, Route>,
    ) -> anyhow::Result<FakeRegistry> {
        Self::start_with(routes, None).await
    }

    pub async fn start_with(
        routes: std::collections::HashMap<String, Route>,
        bearer: Option<BearerAuth>,
    ) -> anyhow::Result<FakeRegistry> {
        use base64::Engine;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let routes = std::sync::Arc::new(routes);
        let bearer = std::sync::Arc::new(bearer);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                let bearer = bearer.clone();
                tokio::spawn(async move {
                    while let Some(req) = read_request(&mut conn).await {
                        let path = req.path.split('?').next().unwrap_or("").to_string();
                        if let Some(auth) = bearer.as_ref() {
                            if path == "/token" {
                                let query = req
                                    .path
                                    .split_once('?')
                                    .map(|(_, q)| q.to_string())
                                    .unwrap_or_default();
                                let form = String::from_utf8_lossy(&req.body).into_owned();
                                let basic = req
                                    .header("authorization")
                                    .and_then(|h| h.strip_prefix("Basic "))
                                    .and_then(|b| {
                                        base64::engine::general_purpose::STANDARD.decode(b).ok()
                                    });
                                let good_basic =
                                    format!("{}:{}", auth.username, auth.password).into_bytes();
                                let answer = match (req.method.as_str(), basic) {
                                    ("POST", _)
                                        if form.contains(&format!(
                                            "refresh_token={}",
                                            auth.refresh_token
                                        )) && form.contains("grant_type=refresh_token") =>
                                    {
                                        response(
                                            "200 OK",
                                            "",
                                            "application/json",
                                            format!("{{\"access_token\":\"{ACCESS_TOKEN}\"}}")
                                                .as_bytes(),
                                        )
                                    }
                                    ("GET", Some(b))
                                        if b == good_basic && query.contains("scope=") =>
                                    {
                                        response(
                                            "200 OK",
                                            "",
                                            "application/json",
                                            format!("{{\"token\":\"{ACCESS_TOKEN}\"}}").as_bytes(),
                                        )
                                    }
                                    ("GET", None) => response(
                                        "200 OK",
                                        "",
                                        "application/json",
                                        b"{\"token\":\"anonymous\"}",
                                    ),
                                    _ => {
                                        response("401 Unauthorized", "", "application/json", b"{}")
                                    }
                                };
                                if conn.write_all(&answer).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            if req.header("authorization")
                                != Some(&format!("Bearer {ACCESS_TOKEN}"))
                            {
                                let challenge = format!(
                                    "www-authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:x:pull\"\r\n"
                                );
                                if conn
                                    .write_all(&response(
                                        "401 Unauthorized",
                                        &challenge,
                                        "application/json",
                                        b"{}",
                                    ))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                                continue;
                            }
                        }
                        let route = if path == "/v2/" {
                            Some(Route {
                                content_type: "application/json".into(),
                                body: b"{}".to_vec(),
                                stall_after: None,
                            })
                        } else {
                            routes.get(&path).cloned()
                        };
                        let Some(route) = route else {
                            if conn
                                .write_all(&response(
                                    "404 Not Found",
                                    "",
                                    "application/json",
                                    b"{}",
                                ))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            continue;
                        };
                        let send = route
                            .stall_after
                            .unwrap_or(route.body.len())
                            .min(route.body.len());
                        let mut out = response("200 OK", "", &route.content_type, &route.body);
                        let head_len = out.len() - route.body.len();
                        if req.method == "HEAD" {
                            out.truncate(head_len);
                        } else {
                            out.truncate(head_len + send);
                        }
                        if conn.write_all(&out).await.is_err() {
                            return;
                        }
                        if route.stall_after.is_some() && req.method != "HEAD" {
                            // Hold the connection open, sending nothing.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(FakeRegistry { port, task })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Routes that serve `image` as `repo:tag`, with `stall_layer` (index) stalling
    /// after `stall_after` bytes.
    pub fn routes_for(
        repo: &str,
        tag: &str,
        image: &Image,
        stall_layer: Option<(usize, usize)>,
    ) -> std::collections::HashMap<String, Route> {
        let mut routes = std::collections::HashMap::new();
        routes.insert(
            format!("/v2/{repo}/manifests/{tag}"),
            Route {
                content_type: image.manifest_media_type.into(),
                body: image.manifest.clone(),
                stall_after: None,
            },
        );
        routes.insert(
            format!("/v2/{repo}/blobs/{}", sha256(&image.config)),
            Route {
                content_type: "application/octet-stream".into(),
                body: image.config.clone(),
                stall_after: None,
            },
        );
        for (i, layer) in image.layers.iter().enumerate() {
            let stall_after = stall_layer.filter(|(n, _)| *n == i).map(|(_, after)| after);
            routes.insert(
                format!("/v2/{repo}/blobs/{}", layer.digest()),
                Route {
                    content_type: "application/octet-stream".into(),
                    body: layer.blob.clone(),
                    stall_after,
                },
            );
        }
        routes
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}
