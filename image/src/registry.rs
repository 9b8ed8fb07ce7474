//! A small registry client (distribution spec v2) on reqwest + rustls: manifests and
//! blobs, with anonymous, Basic and Bearer-token auth.
//!
//! We do not use `oci-client` because crust needs the blob as a byte stream it can feed
//! to a blocking unpacker with back-pressure, a per-chunk progress timeout, and errors
//! that keep the registry's meaning (404 vs 401 vs 403 vs unreachable) for CRI codes.

use std::{net::IpAddr, sync::Mutex, time::Duration};

use reqwest::{Method, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::{
    ImageError,
    auth::{Challenge, Credentials, parse_challenge},
    oci::MANIFEST_ACCEPT,
};

/// Largest manifest or index we accept (containerd's limit too); they are JSON of a
/// few KiB in practice. A manifest fetched by tag has no descriptor to bound it.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config or token response we read into memory, whatever its
/// descriptor declares.
pub const MAX_CONFIG: u64 = 8 << 20;

/// Counts the bytes of a body against the size its descriptor declares, so a lying
/// registry cannot stream more than that into memory or the store (issue 13, item 9:
/// a layer declared 2 KiB streamed 3 GiB into `image/tmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SizeLimit {
    pub declared: u64,
    pub received: u64,
}

impl SizeLimit {
    pub(crate) fn new(declared: u64) -> SizeLimit {
        SizeLimit {
            declared,
            received: 0,
        }
    }

    /// Counts a chunk of `len` bytes; `false` once the body is longer than declared
    /// (the chunk must then be dropped, not used).
    pub(crate) fn take(&mut self, len: usize) -> bool {
        self.received = self.received.saturating_add(len as u64);
        self.received <= self.declared
    }

    /// At the end of the body: it must be exactly as long as declared.
    pub(crate) fn complete(&self) -> bool {
        self.received == self.declared
    }
}

/// One registry endpoint: `http(s)://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry as named in references (`docker.io`), for messages.
    pub registry: String,
    /// Scheme and host to connect to (`https://registry-1.docker.io`).
    pub base: String,
}

impl Endpoint {
    /// The endpoint for a registry host. Loopback registries and those configured as
    /// insecure speak plain HTTP; everything else HTTPS.
    pub fn for_registry(registry: &str, insecure: bool) -> Endpoint {
        let host = if registry == crate::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        };
        Endpoint {
            registry: registry.to_string(),
            base: format!("{scheme}://{host}"),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The shared HTTP client (connection pools are per client).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    pub progress_timeout: Duration,
}

impl Client {
    pub fn new(progress_timeout: Duration) -> Client {
        let http = reqwest::Client::builder()
            .user_agent(concat!("crust/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(progress_timeout.min(Duration::from_secs(30)))
            .build()
            .expect("reqwest client with rustls builds");
        Client {
            http,
            progress_timeout,
        }
    }
}

/// Talks to one repository on one endpoint for one pull; caches the auth header it
/// negotiated so layer downloads reuse the token.
pub struct Session {
    client: Client,
    endpoint: Endpoint,
    repository: String,
    credentials: Option<Credentials>,
    /// The image as the user named it, for error messages.
    image: String,
    authorization: Mutex<Option<String>>,
}

/// A fetched manifest or index.
#[derive(Debug)]
pub struct Document {
    pub media_type: String,
    pub digest: String,
    pub body: Vec<u8>,
}

impl Session {
    pub fn new(
        client: Client,
        endpoint: Endpoint,
        repository: &str,
        credentials: Option<Credentials>,
        image: &str,
    ) -> Session {
        Session {
            client,
            endpoint,
            repository: repository.to_string(),
            credentials,
            image: image.to_string(),
            authorization: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Fetches a manifest or index by tag or digest. When `reference` is a digest the
    /// body is verified against it; `declared` is the size its descriptor gives (by tag
    /// there is none, and [`MAX_MANIFEST`] bounds it).
    pub async fn manifest(
        &self,
        reference: &str,
        declared: Option<u64>,
    ) -> Result<Document, ImageError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let response = self
            .send(
                Method::GET,
                &path,
                Some(&MANIFEST_ACCEPT.join(", ")),
                &format!("manifest {reference}"),
            )
            .await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = match declared {
            Some(size) if size > MAX_MANIFEST => {
                return Err(ImageError::InvalidManifest {
                    image: self.image.clone(),
                    what: "manifest",
                    reason: format!("{reference} declares {size} bytes, more than {MAX_MANIFEST}"),
                });
            }
            Some(size) => {
                self.read_exact_size(response, "manifest", reference, size)
                    .await?
            }
            None => self.read_small(response, "manifest", MAX_MANIFEST).await?,
        };
        let digest = sha256(&body);
        if reference.contains(':') && reference != digest {
            return Err(ImageError::DigestMismatch {
                image: self.image.clone(),
                what: "manifest".into(),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        Ok(Document {
            media_type,
            digest,
            body,
        })
    }

    /// Fetches a small blob (a config) whole, exactly `declared` bytes (at most
    /// [`MAX_CONFIG`]), and verifies its digest.
    pub async fn small_blob(&self, digest: &str, declared: u64) -> Result<Vec<u8>, ImageError> {
        if declared > MAX_CONFIG {
            return Err(ImageError::InvalidManifest {
                image: self.image.clone(),
                what: "image config",
                reason: format!("{digest} declares {declared} bytes, more than {MAX_CONFIG}"),
            });
        }
        let response = self.blob(digest).await?;
        let body = self
            .read_exact_size(response, "config", digest, declared)
            .await?;
        let actual = sha256(&body);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                image: self.image.clone(),
                what: "config".into(),
                expected: digest.into(),
                actual,
            });
        }
        Ok(body)
    }

    /// Starts a blob download; the caller reads it with [`Session::next_chunk`].
    pub async fn blob(&self, digest: &str) -> Result<reqwest::Response, ImageError> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        self.send(Method::GET, &path, None, &format!("blob {digest}"))
            .await
    }

    /// The next chunk of a body, or `None` at its end. Fails with
    /// [`ImageError::ProgressTimeout`] when nothing arrives for the progress timeout.
    pub async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, ImageError> {
        match tokio::time::timeout(self.client.progress_timeout, response.chunk()).await {
            Err(_) => Err(ImageError::ProgressTimeout {
                image: self.image.clone(),
                after: self.client.progress_timeout,
            }),
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(self.unavailable(&e)),
        }
    }

    /// Reads a body of unknown size, refusing it past `max` bytes.
    async fn read_small(
        &self,
        mut response: reqwest::Response,
        what: &'static str,
        max: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let mut body = Vec::new();
        let mut limit = SizeLimit::new(max);
        while let Some(chunk) = self.next_chunk(&mut response).await? {
            if !limit.take(chunk.len()) {
                return Err(ImageError::InvalidManifest {
                    image: self.image.clone(),
                    what,
                    reason: format!("larger than {max} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Reads a body its descriptor says is `declared` bytes long: stops reading one
    /// chunk past it, and refuses a shorter body too.
    async fn read_exact_size(
        &self,
        mut response: reqwest::Response,
        what: &'static str,
        digest: &str,
        declared: u64,
    ) -> Result<Vec<u8>, ImageError> {
        self.check_length(&response, what, digest, declared)?;
        let mut body = Vec::with_capacity(declared as usize);
        let mut limit = SizeLimit::new(declared);
        while let Some(chunk) = self.next_chunk(&mut response).await? {
            if !limit.take(chunk.len()) {
                return Err(self.size_mismatch(what, digest, limit));
            }
            body.extend_from_slice(&chunk);
        }
        if !limit.complete() {
            return Err(self.size_mismatch(what, digest, limit));
        }
        Ok(body)
    }

    /// Refuses a body whose `Content-Length` already disagrees with its descriptor,
    /// before a byte of it is read.
    pub(crate) fn check_length(
        &self,
        response: &reqwest::Response,
        what: &'static str,
        digest: &str,
        declared: u64,
    ) -> Result<(), ImageError> {
        match response.content_length() {
            Some(length) if length != declared => Err(self.size_mismatch(
                what,
                digest,
                SizeLimit {
                    declared,
                    received: length,
                },
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn size_mismatch(
        &self,
        what: &'static str,
        digest: &str,
        limit: SizeLimit,
    ) -> ImageError {
        ImageError::SizeMismatch {
            image: self.image.clone(),
            what,
            digest: digest.to_string(),
            declared: limit.declared,
            received: limit.received,
        }
    }

    fn unavailable(&self, e: &reqwest::Error) -> ImageError {
        // reqwest's message names the URL, which never carries credentials here.
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            source = s.source();
        }
        ImageError::Unavailable {
            image: self.image.clone(),
            registry: self.endpoint.registry.clone(),
            reason,
        }
    }

    /// Sends a request, answering one auth challenge if the registry poses it, and
    /// maps failures to errors. `what` names the object for messages.
    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, ImageError> {
        let url = format!("{}{path}", self.endpoint.base);
        let mut challenged = false;
        loop {
            let mut request = self.client.http.request(method.clone(), &url);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            let auth = self
                .authorization
                .lock()
                .expect("auth lock poisoned")
                .clone();
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let response =
                match tokio::time::timeout(self.client.progress_timeout, request.send()).await {
                    Err(_) => {
                        return Err(ImageError::ProgressTimeout {
                            image: self.image.clone(),
                            after: self.client.progress_timeout,
                        });
                    }
                    Ok(Err(e)) => return Err(self.unavailable(&e)),
                    Ok(Ok(r)) => r,
                };
            match response.status() {
                s if s.is_success() => return Ok(response),
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    let header = self.answer(challenge).await?;
                    *self.authorization.lock().expect("auth lock poisoned") = Some(header);
                }
                StatusCode::UNAUTHORIZED => return Err(self.unauthenticated()),
                StatusCode::FORBIDDEN => return Err(self.denied()),
                StatusCode::NOT_FOUND => {
                    return Err(ImageError::NotFound {
                        image: self.image.clone(),
                        detail: Some(format!(
                            "{what} not found in {}/{}",
                            self.endpoint.registry, self.repository
                        )),
                    });
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    return Err(ImageError::Unavailable {
                        image: self.image.clone(),
                        registry: self.endpoint.registry.clone(),
                        reason: format!("{s} for {what}"),
                    });
                }
                s => {
                    return Err(ImageError::Registry {
                        image: self.image.clone(),
                        registry: self.endpoint.registry.clone(),
                        status: s.as_u16(),
                        what: what.to_string(),
                    });
                }
            }
        }
    }

    fn unauthenticated(&self) -> ImageError {
        ImageError::Unauthenticated {
            image: self.image.clone(),
            registry: self.endpoint.registry.clone(),
        }
    }

    fn denied(&self) -> ImageError {
        ImageError::PermissionDenied {
            image: self.image.clone(),
            registry: self.endpoint.registry.clone(),
        }
    }

    /// Builds the `Authorization` header that answers `challenge`.
    async fn answer(&self, challenge: Option<Challenge>) -> Result<String, ImageError> {
        match (challenge, &self.credentials) {
            (_, Some(Credentials::RegistryToken(token))) => Ok(format!("Bearer {token}")),
            (Some(Challenge::Basic), Some(Credentials::Basic { username, password })) => {
                Ok(Credentials::basic_header(username, password))
            }
            (
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }),
                credentials,
            ) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let token = self
                    .fetch_token(&realm, service.as_deref(), &scope, credentials.as_ref())
                    .await?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(self.unauthenticated()),
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, ImageError> {
        let mut params = vec![("scope", scope.to_string())];
        if let Some(service) = service {
            params.push(("service", service.to_string()));
        }
        let request = match credentials {
            Some(Credentials::IdentityToken { token, .. }) => {
                // OAuth2 refresh-token grant (distribution docs, "oauth.md").
                params.extend([
                    ("grant_type", "refresh_token".to_string()),
                    ("refresh_token", token.clone()),
                    ("client_id", "crust".to_string()),
                ]);
                let mut url = reqwest::Url::parse("http://x/").expect("static url");
                url.query_pairs_mut().extend_pairs(params.iter());
                let body = url.query().unwrap_or("").to_string();
                self.client
                    .http
                    .post(realm)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            other => {
                let url = reqwest::Url::parse_with_params(realm, params.iter()).map_err(|_| {
                    ImageError::Registry {
                        image: self.image.clone(),
                        registry: self.endpoint.registry.clone(),
                        status: 401,
                        what: "token realm (not a URL)".into(),
                    }
                })?;
                let mut request = self.client.http.get(url);
                if let Some(Credentials::Basic { username, password }) = other {
                    request = request.header(
                        header::AUTHORIZATION,
                        Credentials::basic_header(username, password),
                    );
                }
                request
            }
        };
        let response =
            match tokio::time::timeout(self.client.progress_timeout, request.send()).await {
                Err(_) => {
                    return Err(ImageError::ProgressTimeout {
                        image: self.image.clone(),
                        after: self.client.progress_timeout,
                    });
                }
                Ok(Err(e)) => return Err(self.unavailable(&e)),
                Ok(Ok(r)) => r,
            };
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED => return Err(self.unauthenticated()),
            StatusCode::FORBIDDEN => return Err(self.denied()),
            s => {
                return Err(ImageError::Registry {
                    image: self.image.clone(),
                    registry: self.endpoint.registry.clone(),
                    status: s.as_u16(),
                    what: "token request".into(),
                });
            }
        }
        let body = self
            .read_small(response, "token response", MAX_CONFIG)
            .await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| ImageError::InvalidManifest {
                image: self.image.clone(),
                what: "token response",
                reason: e.to_string(),
            })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unauthenticated())
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_stops_past_the_declared_size() {
        // (declared, chunk lengths, accepted chunks, complete at the end)
        let cases: &[(u64, &[usize], usize, bool, &str)] = &[
            (10, &[4, 6], 2, true, "exact"),
            (10, &[4, 5], 2, false, "short"),
            (10, &[4, 7], 1, false, "one byte too many in the last chunk"),
            (10, &[11], 0, false, "first chunk already too long"),
            (0, &[], 0, true, "empty and declared empty"),
            (0, &[1], 0, false, "declared empty, got a byte"),
        ];
        for (declared, chunks, accepted, complete, name) in cases {
            let mut limit = SizeLimit::new(*declared);
            let taken = chunks.iter().take_while(|len| limit.take(**len)).count();
            assert_eq!(taken, *accepted, "{name}: chunks accepted");
            assert_eq!(limit.complete(), *complete, "{name}: complete");
        }
    }

    #[test]
    fn endpoints() {
        let cases = [
            ("docker.io", false, "https://registry-1.docker.io"),
            ("quay.io", false, "https://quay.io"),
            ("quay.io", true, "http://quay.io"),
            ("127.0.0.1:5000", false, "http://127.0.0.1:5000"),
            ("localhost:5000", false, "http://localhost:5000"),
            ("localhost", false, "http://localhost"),
            ("[::1]:5000", false, "http://[::1]:5000"),
            ("10.0.0.1:5000", false, "https://10.0.0.1:5000"),
        ];
        for (registry, insecure, base) in cases {
            assert_eq!(
                Endpoint::for_registry(registry, insecure).base,
                base,
                "{registry}"
            );
        }
    }
}
