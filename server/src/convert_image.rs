//! CRI image messages <-> the image crate's domain types.

use crust_image::{AuthConfig, Credentials, ImageView};
use crust_proto::runtime::v1 as cri;

use crate::error::ApiError;

/// CRI `Image` for a stored image.
pub fn image_to_cri(view: &ImageView) -> cri::Image {
    let record = &view.record;
    let (uid, username) = record.config.uid_or_username();
    cri::Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: record.id.clone(),
            annotations: record.annotations.clone().into_iter().collect(),
            ..Default::default()
        }),
        pinned: view.pinned,
    }
}

/// The image string of an `ImageSpec`, required non-empty.
pub fn image_name(spec: Option<&cri::ImageSpec>, field: &'static str) -> Result<String, ApiError> {
    let name = spec.map(|s| s.image.trim()).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::InvalidArgument {
            field,
            reason: "empty image".into(),
        });
    }
    // Before the name reaches the RPC's span, a log line or the store: a 10 MiB name
    // was logged whole and looked up as it was.
    crate::convert_limits::image_name(field, name)?;
    Ok(name.to_string())
}

/// Credentials from a CRI `AuthConfig`; `None` for anonymous pulls.
pub fn credentials(
    auth: Option<&cri::AuthConfig>,
    image: &str,
) -> Result<Option<Credentials>, ApiError> {
    let Some(a) = auth else { return Ok(None) };
    let config = AuthConfig {
        username: a.username.clone(),
        password: a.password.clone(),
        auth: a.auth.clone(),
        identity_token: a.identity_token.clone(),
        registry_token: a.registry_token.clone(),
    };
    Credentials::from_auth_config(&config).map_err(|reason| {
        crust_image::ImageError::InvalidAuth {
            image: image.to_string(),
            reason,
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_and_username_from_user() {
        let cases = [
            ("", None, ""),
            ("1000", Some(1000), ""),
            ("1000:1000", Some(1000), ""),
            ("nobody", None, "nobody"),
            ("app:grp", None, "app"),
        ];
        for (user, uid, name) in cases {
            let view = ImageView {
                record: crust_image::ImageRecord {
                    id: "sha256:x".into(),
                    repo_tags: vec![],
                    repo_digests: vec![],
                    size: 1,
                    layers: vec![],
                    manifest_digests: vec![],
                    config: crust_image::ImageConfig {
                        user: user.into(),
                        ..Default::default()
                    },
                    annotations: Default::default(),
                    removed: false,
                },
                pinned: false,
            };
            let image = image_to_cri(&view);
            assert_eq!(image.uid.map(|u| u.value), uid, "{user}");
            assert_eq!(image.username, name, "{user}");
        }
    }

    #[test]
    fn bad_auth_is_invalid_argument_without_secret() {
        let auth = cri::AuthConfig {
            auth: "not-base64-s3cret!".into(),
            ..Default::default()
        };
        let err = credentials(Some(&auth), "x").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
