//! The OpenAPI document served at `/openapi.json` and rendered at `/docs`: the
//! domains' annotated handlers, and the answers every operation may give.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::http::openapi::{ErrorDetail, ValidationErrorBody};

/// The API description served at `/openapi.json` and rendered at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clinscribe",
        description = "Clinical dictation service: recordings, uploads and their processing state. \
                       Wire-compatible with the original PWA service.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        crate::health::health,
        crate::recordings::api::create_recording,
        crate::recordings::api::list_recordings,
        crate::recordings::api::get_recording,
        crate::recordings::api::patch_recording,
        crate::recordings::api::retry_recording,
        crate::recordings::api::sign_recording,
        crate::recordings::api::amend_recording,
        crate::recordings::api::delete_recording,
        crate::recordings::api::list_changes,
        crate::recordings::api::history,
        crate::uploads::api::multipart::upload_recording,
        crate::uploads::api::download::download_audio,
        crate::uploads::api::chunked::start_upload,
        crate::uploads::api::chunked::upload_status,
        crate::uploads::api::chunked::upload_chunk,
    ),
    components(schemas(ErrorDetail, ValidationErrorBody, crate::validation::ValidationIssue)),
    modifiers(&CommonResponses),
    tags(
        (name = "health", description = "Service health"),
        (name = "recordings", description = "Clinical recordings"),
        (name = "uploads", description = "Audio: uploads that are never lost or duplicated, chunked uploads, download"),
    )
)]
pub struct ApiDoc;

/// The answers any operation may give, whatever its handler: added to every
/// operation here rather than repeated in each annotation.
///
/// - 421: the `Host` is not a name of this server (see `http::guard`);
/// - 503: the database is busy or unavailable (with `Retry-After`);
/// - state-changing operations: 403 (a page of another site), 507 (the
///   storage is full, with `Retry-After`).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.head].into_iter().flatten() {
                add_common(operation, false);
            }
            for operation in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common(operation, true);
            }
        }
    }
}

fn add_common(operation: &mut Operation, changes_state: bool) {
    let mut common = vec![
        (
            "421",
            "The Host header is not a name of this server (PWA_ALLOWED_HOSTS)",
        ),
        (
            "503",
            "The database is busy or unavailable; retry after `Retry-After` seconds",
        ),
    ];
    if changes_state {
        common.push((
            "403",
            "Sent by a page of another site (Origin or Sec-Fetch-Site; PWA_ALLOWED_ORIGINS)",
        ));
        common.push((
            "507",
            "The server's storage is full; nothing was stored; retry after `Retry-After` seconds",
        ));
    }
    for (status, description) in common {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name("ErrorDetail"))),
                    )
                    .build()
                    .into()
            });
    }
}
