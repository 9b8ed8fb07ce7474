//! Image references: parsing and normalisation of the docker/OCI syntax.
//!
//! Grammar (distribution/reference): `[host[:port]/]path[:tag][@algo:hex]`. The first
//! path component is a registry host only when it contains a `.` or a `:` or is
//! `localhost`; otherwise the reference lives on Docker Hub, and a single-component name
//! there gets the `library/` namespace. The tag defaults to `latest` unless a digest is
//! given.

use std::fmt;

/// Registry that unqualified names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// Why a reference string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

/// A fully qualified image reference.
///
/// ```
/// use crust_image::Reference;
/// let r: Reference = "busybox".parse().unwrap();
/// assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
/// assert_eq!(r.registry(), "docker.io");
/// assert_eq!(r.repository(), "library/busybox");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason| ReferenceError {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > 4096 {
            return Err(err("longer than 4096 characters"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(err)?;
                (name, Some(digest.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(err)?;
        }
        if name.is_empty() {
            return Err(err("empty name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                validate_host(first).map_err(err)?;
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        // Docker's historical aliases for Hub.
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
            _ => registry,
        };
        validate_path(&path).map_err(err)?;
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(err("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, the name repo tags and digests are built on.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when there is one
    /// (it pins the content), else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// `name:tag`, when the reference has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `name@digest` for a given manifest digest.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The same reference on another registry/repository (mirrors and rewrites).
    pub fn with_location(&self, registry: &str, repository: &str) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            ..self.clone()
        }
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks `algo:hex`. Only sha256 and sha512 are accepted: they are what registries
/// serve, and an unknown algorithm could not be verified anyway.
pub fn validate_digest(digest: &str) -> Result<(), &'static str> {
    let (algo, hex) = digest
        .split_once(':')
        .ok_or("digest must be algorithm:hex")?;
    let len = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm (want sha256 or sha512)"),
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("digest hex has the wrong length or is not lowercase hex");
    }
    Ok(())
}

/// Tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
    }
}

/// Host: DNS labels (letters, digits, '-') separated by '.', or a bracketed IPv6
/// address, optionally followed by `:port`.
fn validate_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or("unterminated IPv6 address in registry host")?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid IPv6 address in registry host");
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or("invalid registry host")?),
            ),
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err("registry port must be a number up to 65535");
    }
    if let Some(name) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !name.split('.').all(label_ok) {
            return Err("invalid registry host name");
        }
    }
    Ok(())
}

/// Path: components of lowercase `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn validate_path(path: &str) -> Result<(), &'static str> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("empty path component");
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("repository name must be lowercase");
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err("path components must start and end with a letter or digit");
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            // A separator: '.', '_', '__' or one or more '-'.
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let valid = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
            if !valid {
                return Err("invalid character or separator in repository name");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_and_normalises() {
        // input, registry, repository, tag, digest, display
        let dig = format!("busybox@{D}");
        let tag_dig = format!("quay.io/a/b:1.0@{D}");
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            String,
        );
        let cases: Vec<Case> = vec![
            (
                "busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
                "docker.io/library/busybox:1.36".into(),
            ),
            (
                "docker.io/library/busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
                "docker.io/library/busybox:1.36".into(),
            ),
            (
                "index.docker.io/busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "user/app",
                "docker.io",
                "user/app",
                Some("latest"),
                None,
                "docker.io/user/app:latest".into(),
            ),
            (
                "localhost/app",
                "localhost",
                "app",
                Some("latest"),
                None,
                "localhost/app:latest".into(),
            ),
            (
                "127.0.0.1:5000/ns/name:tag",
                "127.0.0.1:5000",
                "ns/name",
                Some("tag"),
                None,
                "127.0.0.1:5000/ns/name:tag".into(),
            ),
            (
                "localhost:5000/a/b/c",
                "localhost:5000",
                "a/b/c",
                Some("latest"),
                None,
                "localhost:5000/a/b/c:latest".into(),
            ),
            (
                "[::1]:5000/x",
                "[::1]:5000",
                "x",
                Some("latest"),
                None,
                "[::1]:5000/x:latest".into(),
            ),
            (
                &dig,
                "docker.io",
                "library/busybox",
                None,
                Some(D),
                format!("docker.io/library/busybox@{D}"),
            ),
            (
                &tag_dig,
                "quay.io",
                "a/b",
                Some("1.0"),
                Some(D),
                format!("quay.io/a/b:1.0@{D}"),
            ),
            (
                "my-reg.example.com/a__b/c.d-e---f:V_1.x",
                "my-reg.example.com",
                "a__b/c.d-e---f",
                Some("V_1.x"),
                None,
                "my-reg.example.com/a__b/c.d-e---f:V_1.x".into(),
            ),
        ];
        for (input, registry, repository, tag, digest, display) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), registry, "{input}: registry");
            assert_eq!(r.repository(), repository, "{input}: repository");
            assert_eq!(r.tag(), tag, "{input}: tag");
            assert_eq!(r.digest(), digest, "{input}: digest");
            assert_eq!(r.to_string(), display, "{input}: display");
            assert_eq!(
                Reference::parse(&display).unwrap(),
                r,
                "{input}: normalised form must re-parse to itself"
            );
        }
    }

    #[test]
    fn rejects_malformed() {
        let short_digest = "busybox@sha256:abc".to_string();
        let md5 = format!("busybox@md5:{}", &D[7..39]);
        let upper_digest = format!("busybox@{}", D.to_uppercase().replace("SHA256", "sha256"));
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox:a/b", "port"),
            ("busy box", "invalid character"),
            ("/busybox", "empty path component"),
            ("busybox/", "empty path component"),
            ("a//b", "empty path component"),
            ("quay.io/", "empty path component"),
            ("example.com:99999/x", "port"),
            ("example.com:/x", "port"),
            ("-bad.com/x", "host"),
            ("[::zz]:5000/x", "IPv6"),
            ("a..b", "separator"),
            ("a___b", "separator"),
            ("_a", "start and end"),
            (&short_digest, "digest"),
            (&md5, "algorithm"),
            (&upper_digest, "digest"),
            (&long_tag, "tag"),
            ("busybox@", "digest"),
            ("@sha256:x", "digest"),
        ];
        for (input, word) in cases {
            let e = Reference::parse(input).expect_err(input);
            assert_eq!(e.reference, input, "the error names the reference");
            assert!(
                e.to_string().contains(word),
                "{input}: {e} should mention {word:?}"
            );
        }
    }

    #[test]
    fn repo_tag_digest_and_manifest_ref() {
        let r = Reference::parse("127.0.0.1:5000/x:v1").unwrap();
        assert_eq!(r.repo_tag().as_deref(), Some("127.0.0.1:5000/x:v1"));
        assert_eq!(r.repo_digest(D), format!("127.0.0.1:5000/x@{D}"));
        assert_eq!(r.manifest_ref(), "v1");
        let r = Reference::parse(&format!("x:v1@{D}")).unwrap();
        assert_eq!(r.manifest_ref(), D, "a digest wins over the tag");
        let r = Reference::parse(&format!("x@{D}")).unwrap();
        assert_eq!(r.repo_tag(), None);
    }
}
